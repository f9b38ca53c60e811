"""What serving a pipeline's variants costs, read off one measured profile.

The cluster engine (:mod:`sim.cluster`) needs, per (task, variant, cores), a service-time
sampler and each variant's load time; the adapters plan with a few figures of the same
profile — a replica's p99 latency and its throughput at a batch size (IPA), its
service time at batch 1 (InfAdapter's capacity against cores). One
:class:`VariantCosts` answers all of them from the same rows, so the plan and the
simulation can never disagree about what a variant costs.

A variant's latency is its profile ``model`` (every stage of it, summed) on the
hardware :func:`workloads.variants.cpu_hardware` names for the cores its lane runs on
or, where replicas hold whole accelerators (``device``: a GPU's or a MIG slice's
hardware name), on that device, one per lane;
its cold start is the ``load`` stage of ``<model>_load`` (``python -m
servesim.workloads.profiler_torch --load-time``), median, at batch 1.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import numpy as np

from .cost_model import CostModel
from .noise import Deterministic, Noise
from .profile import Profile, ProfileError
from .variants import Pipeline, cpu_cores, cpu_hardware

LOAD_STAGE = "load"


def load_model(model: str) -> str:
    """The profile model that holds ``model``'s cold start."""
    return f"{model}_load"


class VariantCosts:
    """Cost models of ``pipeline``'s variants in ``profile`` (built on first use).

    ``load_times`` (seconds, by variant name) overrides or stands in for measured load
    times; a variant with neither is an error naming it. ``device``: the hardware of the
    accelerator a replica's units are (one per lane), instead of CPU cores."""

    def __init__(self, profile: Profile, pipeline: Pipeline, *, noise: Noise = Deterministic(),
                 out_of_range: str = "extrapolate", load_times: Optional[Mapping[str, float]] = None,
                 device: Optional[str] = None):
        self.profile, self.pipeline, self.noise, self.out_of_range = profile, pipeline, noise, out_of_range
        self.device = device
        self.load_times = dict(load_times or {})
        self._models: dict[tuple[str, int], CostModel] = {}
        for task in pipeline.tasks:
            for variant in task.variants:
                if variant.model not in profile.models():
                    raise ProfileError(f"{profile.source}: no model {variant.model!r} (variant {variant.name!r} of "
                                       f"task {task.name!r}); the profile has: {', '.join(profile.models())}")

    def _model(self, task: str, variant: str) -> str:
        return self.pipeline.task(task).variant(variant).model

    def cores_profiled(self, task: str, variant: str) -> tuple[int, ...]:
        """The core counts ``variant`` was measured on, ascending."""
        found = (cpu_cores(h) for h in self.profile.hardware(self._model(task, variant)))
        return tuple(sorted(c for c in found if c is not None))

    def cost_model(self, task: str, variant: str, cores: int) -> CostModel:
        model = self._model(task, variant)
        key = (model, cores)
        if key not in self._models:
            if self.device is not None and cores != 1:
                raise ProfileError(f"a lane runs on one {self.device!r} device, not {cores}: serve a replica's "
                                   f"devices as lanes (core_mode: lanes)")
            hardware = cpu_hardware(cores) if self.device is None else self.device
            if hardware not in self.profile.hardware(model):
                unit = f"{cores} core(s)" if self.device is None else "its device"
                raise ProfileError(f"{self.profile.source}: {model!r} (variant {variant!r}) was not measured on "
                                   f"{unit} ({hardware!r}); it was on: "
                                   f"{', '.join(self.profile.hardware(model))}")
            self._models[key] = CostModel(self.profile, model, hardware=hardware, noise=self.noise,
                                          out_of_range=self.out_of_range)
        return self._models[key]

    def service(self, seed: int) -> Callable[[str, str, int], Callable[[int], float]]:
        """``service(task, variant, cores)``: a sampler of one lane's batch times, each
        (task, variant, cores) on its own random stream of ``seed`` — the engine's
        :class:`sim.cluster.ClusterCosts` ``service``."""
        tasks = [t.name for t in self.pipeline.tasks]

        def service(task: str, variant: str, cores: int) -> Callable[[int], float]:
            t = tasks.index(task)
            v = [x.name for x in self.pipeline.tasks[t].variants].index(variant)
            return self.cost_model(task, variant, cores).sampler(np.random.default_rng([seed, t, v, cores]))

        return service

    def latency(self, task: str, variant: str, cores: int) -> Callable[[int], float]:
        """``latency(batch)``: the median seconds of one lane's batch, as the profile says —
        :class:`sim.cluster.ClusterCosts` ``latency``, for the deadline batching policy."""
        return self.cost_model(task, variant, cores).batch_latency

    def load_time(self, task: str, variant: str) -> float:
        """A replica's provisioning delay (s): the measured cold start, or ``load_times``.
        A cold start measured at several core counts is taken at the fewest: loading
        weights is mostly reading them, which more cores barely speed up."""
        if variant in self.load_times:
            return float(self.load_times[variant])
        model = load_model(self._model(task, variant))
        if model not in self.profile.models():
            raise ProfileError(f"{self.profile.source}: no load time for variant {variant!r} (no model {model!r}, "
                               f"stage {LOAD_STAGE!r}; measure it with the profiler's --load-time, or give it)")
        measured = self.profile.hardware(model)
        hardware = (self.device if self.device in measured
                    else min(measured, key=lambda h: (cpu_cores(h) is None, cpu_cores(h) or 0, h)))
        return CostModel(self.profile, model, hardware=hardware, stages=(LOAD_STAGE,)).batch_latency(1)

    def p99(self, task: str, variant: str, cores: int, batch: int) -> float:
        """A batch's p99 latency (s): the sum of its stages' p99s (exact for a one-stage
        model, an upper bound otherwise)."""
        return float(sum(p.p99 for p in self.cost_model(task, variant, cores).percentiles(batch)))

    def throughput(self, task: str, variant: str, cores: int, batch: int, lanes: int = 1) -> float:
        """Requests/s one replica sustains running full batches back to back on ``lanes`` lanes."""
        return lanes * batch / self.cost_model(task, variant, cores).batch_latency(batch)
