"""Variant menus and inference pipelines: what a model-switching policy may choose from.

InfAdapter picks among ResNet-18..152 for one image-classification service; IPA picks,
per stage of a pipeline, one variant of each task. Both trade a variant's *accuracy*
against its *cost*, and the cost lives in a profile (:mod:`workloads.profile`), so a
:class:`Variant` holds just its accuracy and the profile model that times it (its
``forward`` rows from :mod:`workloads.profiler_torch`, and its cold start as
``<model>_load``). A :class:`Task` is a menu of variants, sorted by accuracy (IPA's
rank-normalised accuracy reads that order); a :class:`Pipeline` is a DAG of tasks.

Accuracies are fractions in [0, 1]. Every metric below is published on a 0-100 scale
(percent top-1, percent mAP, percent language-id accuracy, BLEU, ROUGE-L) and is
divided by 100, as IPA's "PAS" (the product of stage accuracies / 100) does. Only the
top-1 and language-id figures are probabilities of a right answer; mAP, BLEU and
ROUGE-L are scores, so an accuracy compares variants *within* a task, and a product
across tasks is IPA's convention, not a probability.

Profiles at several CPU core counts share one file under hardware names made by
:func:`cpu_hardware` (``cpu-1c``, ``cpu-2c``, ...), the one definition of that name.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence


def cpu_hardware(cores: int) -> str:
    """The profile hardware name of ``cores`` CPU cores (``cpu-4c``): one name per core
    count lets profiles at several allocations share a file, and a policy that
    allocates cores (IPA, InfAdapter, VPA) reads the count back with :func:`cpu_cores`."""
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise ValueError(f"cores must be a positive integer, got {cores!r}")
    return f"cpu-{cores}c"


def cpu_cores(hardware: str) -> int | None:
    """The core count a :func:`cpu_hardware` name stands for; None for any other name
    (plain ``cpu``, a GPU's name)."""
    digits = hardware.removeprefix("cpu-").removesuffix("c")
    if digits.isdecimal() and int(digits) > 0 and cpu_hardware(int(digits)) == hardware:
        return int(digits)
    return None


def _name(owner: str, field_name: str, value: object) -> None:
    """Refuse a name that is not a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{owner}: {field_name} must be a non-empty string, got {value!r}")


def _members(owner: str, field_name: str, items: Sequence, kind: type) -> tuple:
    """``items`` as a tuple: at least one, each a ``kind``, their names unique."""
    members = tuple(items)
    if not members:
        raise ValueError(f"{owner}: {field_name} must list at least one {kind.__name__}, got {items!r}")
    for member in members:
        if not isinstance(member, kind):
            raise TypeError(f"{owner}: {field_name} must be {kind.__name__} objects, got {member!r}")
    repeated = sorted(n for n, count in Counter(m.name for m in members).items() if count > 1)
    if repeated:
        raise ValueError(f"{owner}: {kind.__name__.lower()} names must be unique; "
                         f"{', '.join(map(repr, repeated))} repeated")
    return members


def _find(owner: str, field_name: str, members: Sequence, name: str):
    """The member of ``members`` called ``name``."""
    for member in members:
        if member.name == name:
            return member
    raise ValueError(f"{owner} has no {field_name[:-1]} {name!r}; "
                     f"its {field_name} are {', '.join(m.name for m in members)}")


@dataclass(frozen=True)
class Variant:
    """One model of a task's menu: ``accuracy`` (a fraction) under ``metric``, and the
    profile ``model`` whose rows give its latency."""

    name: str
    accuracy: float
    metric: str
    model: str

    def __post_init__(self) -> None:
        _name("variant", "name", self.name)
        owner = f"variant {self.name!r}"
        if (isinstance(self.accuracy, bool) or not isinstance(self.accuracy, (int, float))
                or not math.isfinite(self.accuracy) or not 0 <= self.accuracy <= 1):
            raise ValueError(f"{owner}: accuracy must be a fraction in [0, 1], got {self.accuracy!r}")
        _name(owner, "metric", self.metric)
        _name(owner, "model", self.model)


@dataclass(frozen=True)
class Task:
    """A menu of variants for one job, stored sorted by accuracy (ascending; ties keep
    the given order), so the last is the most accurate."""

    name: str
    variants: tuple[Variant, ...]

    def __post_init__(self) -> None:
        _name("task", "name", self.name)
        owner = f"task {self.name!r}"
        variants = _members(owner, "variants", self.variants, Variant)
        object.__setattr__(self, "variants", tuple(sorted(variants, key=lambda v: v.accuracy)))

    def variant(self, name: str) -> Variant:
        """The variant called ``name``."""
        return _find(f"task {self.name!r}", "variants", self.variants, name)


@dataclass(frozen=True)
class Pipeline:
    """Tasks joined by ``edges`` (upstream name, downstream name) into a connected DAG:
    a request enters at the sources and is answered when every sink has run."""

    name: str
    tasks: tuple[Task, ...]
    edges: tuple[tuple[str, str], ...] = ()
    _order: tuple[Task, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _name("pipeline", "name", self.name)
        owner = f"pipeline {self.name!r}"
        tasks = _members(owner, "tasks", self.tasks, Task)
        names = [task.name for task in tasks]
        for edge in self.edges:
            if not isinstance(edge, (tuple, list)) or len(edge) != 2:
                raise ValueError(f"{owner}: an edge must be (upstream, downstream) task names, got {edge!r}")
        edges = tuple(tuple(edge) for edge in self.edges)
        for edge in edges:
            for end in edge:
                if end not in names:
                    raise ValueError(f"{owner}: edge {edge!r} names unknown task {end!r}; "
                                     f"the tasks are {', '.join(names)}")
        repeated_edges = sorted(e for e, count in Counter(edges).items() if count > 1)
        if repeated_edges:
            raise ValueError(f"{owner}: edge {repeated_edges[0]!r} is listed more than once")
        object.__setattr__(self, "tasks", tasks)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "_order", self._topological(owner))
        self._check_connected(owner)

    def _topological(self, owner: str) -> tuple[Task, ...]:
        """Kahn's algorithm, taking ready tasks in their listed order (deterministic);
        tasks left over lie on or after a cycle, and one cycle is named."""
        by_name = {task.name: task for task in self.tasks}
        waiting = {name: sum(down == name for _, down in self.edges) for name in by_name}
        order: list[str] = []
        while ready := [name for name in by_name if waiting[name] == 0 and name not in order]:
            order.append(ready[0])
            for up, down in self.edges:
                if up == ready[0]:
                    waiting[down] -= 1
        left = [name for name in by_name if name not in order]
        if left:
            # Every task left has an upstream task also left: walk upstream until one repeats.
            walk, name = [], left[0]
            while name not in walk:
                walk.append(name)
                name = next(up for up, down in self.edges if down == name and up in left)
            cycle = walk[walk.index(name):][::-1]
            raise ValueError(f"{owner}: edges form a cycle {' -> '.join([*cycle, cycle[0]])}; "
                             f"a pipeline must be acyclic")
        return tuple(by_name[name] for name in order)

    def _check_connected(self, owner: str) -> None:
        reached, frontier = {self.tasks[0].name}, [self.tasks[0].name]
        while frontier:
            name = frontier.pop()
            for edge in self.edges:
                if name in edge:
                    other = edge[1] if edge[0] == name else edge[0]
                    if other not in reached:
                        reached.add(other)
                        frontier.append(other)
        apart = [task.name for task in self.tasks if task.name not in reached]
        if apart:
            raise ValueError(f"{owner}: not connected; {', '.join(map(repr, apart))} not linked to "
                             f"{self.tasks[0].name!r} by any edges")

    def order(self) -> tuple[Task, ...]:
        """The tasks in a topological order: every task after all its upstream tasks."""
        return self._order

    def sources(self) -> tuple[Task, ...]:
        """Tasks with no upstream task (where requests enter), in topological order."""
        return tuple(t for t in self._order if all(down != t.name for _, down in self.edges))

    def sinks(self) -> tuple[Task, ...]:
        """Tasks with no downstream task (whose outputs answer), in topological order."""
        return tuple(t for t in self._order if all(up != t.name for up, _ in self.edges))

    def task(self, name: str) -> Task:
        """The task called ``name``."""
        return _find(f"pipeline {self.name!r}", "tasks", self.tasks, name)


def _menu(task: str, metric: str, scores: Sequence[tuple[str, float, str]]) -> Task:
    """A task from (variant, score on the metric's 0-100 scale, profile model)."""
    return Task(task, tuple(Variant(name, score / 100, metric, model) for name, score, model in scores))


# torchvision's published ImageNet-1k top-1 of the IMAGENET1K_V1 weights (InfAdapter's
# menu; the research notes, section 2, round them to 0.698 ... 0.783).
RESNET = _menu("classification", "ImageNet-1k top-1 (torchvision V1 weights)", [
    ("resnet18", 69.758, "resnet18"), ("resnet34", 73.314, "resnet34"), ("resnet50", 76.130, "resnet50"),
    ("resnet101", 77.374, "resnet101"), ("resnet152", 78.312, "resnet152")])

# IPA's video detector (data/configs/accuracies.yaml, research notes section 1.4): the
# Ultralytics v6 table's COCO val2017 mAP@0.5 at 640 px.
YOLOV5 = _menu("detection", "COCO val2017 mAP@0.5 (640 px)", [
    ("yolov5n", 45.7, "yolov5n"), ("yolov5s", 56.8, "yolov5s"), ("yolov5m", 64.1, "yolov5m"),
    ("yolov5l", 67.3, "yolov5l"), ("yolov5x", 68.9, "yolov5x")])

# IPA's nlp pipeline (data/configs/accuracies.yaml, research notes section 1.4).
LANGUAGE_ID = _menu("language-id", "language-identification accuracy",
                    [("xlm-roberta-base-langid", 99.59, "langid_xlmr")])
TRANSLATION = _menu("translation", "BLEU (fr-en)", [
    ("opus-mt-fr-en", 33.1, "opus_mt"), ("opus-mt-tc-big-fr-en", 34.4, "tc_big")])
SUMMARISATION = _menu("summarisation", "ROUGE-L (XSum)", [
    ("distilbart-xsum-1-1", 32.26, "distilbart_1_1"), ("distilbart-xsum-12-1", 33.37, "distilbart_12_1"),
    ("distilbart-xsum-6-6", 35.73, "distilbart_6_6"), ("distilbart-xsum-12-3", 36.39, "distilbart_12_3"),
    ("distilbart-xsum-9-6", 36.61, "distilbart_9_6"), ("distilbart-xsum-12-6", 36.99, "distilbart_12_6")])

# IPA's video pipeline: objects detected in a frame, then classified.
VIDEO = Pipeline("video", (YOLOV5, RESNET), (("detection", "classification"),))
# IPA's nlp pipeline: identify the language, translate to English, summarise.
NLP = Pipeline("nlp", (LANGUAGE_ID, TRANSLATION, SUMMARISATION),
               (("language-id", "translation"), ("translation", "summarisation")))

# The image classifiers with stage and ramp profiles measured on an H100 (shared data
# ``h100-stage-profiles``: ``vgg13`` and ``resnet50``, imported by ``servesim profile
# import``), by torchvision's published ImageNet-1k top-1 of their V1 weights.
GPU_CLASSIFIERS = _menu("classification", "ImageNet-1k top-1 (torchvision V1 weights)", [
    ("vgg13", 69.928, "vgg13"), ("resnet50", 76.130, "resnet50")])

FAMILIES: dict[str, Task] = {task.name: task for task in (RESNET, YOLOV5, LANGUAGE_ID, TRANSLATION, SUMMARISATION)}
# The GPU-profiled classifiers served alone (their task keeps the name "classification")
CLASSIFICATION_GPU = Pipeline("classification_gpu", (GPU_CLASSIFIERS,))

PIPELINES: dict[str, Pipeline] = {pipeline.name: pipeline for pipeline in (VIDEO, NLP, CLASSIFICATION_GPU)}
