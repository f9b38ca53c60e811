"""Variant menus and pipelines: validation (each error names the field and the value),
topological order, the built-in menus' published figures, and that every variant's
profile model is one the torch profiler can build."""

import math
import re

import pytest

from servesim.workloads.variants import (
    FAMILIES,
    NLP,
    PIPELINES,
    RESNET,
    SUMMARISATION,
    VIDEO,
    Pipeline,
    Task,
    Variant,
    cpu_cores,
    cpu_hardware,
)


def v(name, accuracy=0.5):
    return Variant(name, accuracy, "top-1", name)


def t(name, *variants):
    return Task(name, variants or (v(f"{name}-v"),))


def names(tasks):
    return tuple(task.name for task in tasks)


def test_cpu_hardware_names_round_trip_and_other_names_have_no_cores():
    assert [cpu_hardware(n) for n in (1, 2, 16)] == ["cpu-1c", "cpu-2c", "cpu-16c"]
    assert all(cpu_cores(cpu_hardware(n)) == n for n in range(1, 129))
    for other in ("cpu", "cpu-0c", "cpu-01c", "cpu-2", "cpu-c", "cpu--2c", "NVIDIA H200", "cpu-2cc"):
        assert cpu_cores(other) is None, other


@pytest.mark.parametrize("cores", [0, -1, 1.0, True, "2"])
def test_cpu_hardware_refuses_anything_but_a_positive_integer(cores):
    with pytest.raises(ValueError, match=re.escape(f"cores must be a positive integer, got {cores!r}")):
        cpu_hardware(cores)


@pytest.mark.parametrize("fields, message", [
    (("", 0.5, "m", "x"), "variant: name must be a non-empty string, got ''"),
    ((None, 0.5, "m", "x"), "variant: name must be a non-empty string, got None"),
    (("a", 1.5, "m", "x"), "variant 'a': accuracy must be a fraction in [0, 1], got 1.5"),
    (("a", -0.1, "m", "x"), "variant 'a': accuracy must be a fraction in [0, 1], got -0.1"),
    (("a", math.nan, "m", "x"), "variant 'a': accuracy must be a fraction in [0, 1], got nan"),
    (("a", "0.5", "m", "x"), "variant 'a': accuracy must be a fraction in [0, 1], got '0.5'"),
    (("a", True, "m", "x"), "variant 'a': accuracy must be a fraction in [0, 1], got True"),
    (("a", 0.5, " ", "x"), "variant 'a': metric must be a non-empty string, got ' '"),
    (("a", 0.5, "m", ""), "variant 'a': model must be a non-empty string, got ''"),
])
def test_variant_errors_name_the_field_and_value(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Variant(*fields)


def test_variant_accepts_the_ends_of_the_range():
    assert Variant("a", 0, "m", "x").accuracy == 0 and Variant("a", 1.0, "m", "x").accuracy == 1.0


def test_task_sorts_its_variants_by_accuracy_keeping_ties_in_order():
    task = Task("job", [v("c", 0.9), v("a", 0.1), v("b1", 0.5), v("b2", 0.5)])
    assert [x.name for x in task.variants] == ["a", "b1", "b2", "c"]
    assert isinstance(task.variants, tuple)
    assert task.variant("b2").accuracy == 0.5


def test_task_errors_name_the_field_and_value():
    with pytest.raises(ValueError, match=re.escape("task: name must be a non-empty string, got ''")):
        Task("", (v("a"),))
    with pytest.raises(ValueError, match=re.escape("task 'job': variants must list at least one Variant, got ()")):
        Task("job", ())
    with pytest.raises(TypeError, match=re.escape("task 'job': variants must be Variant objects, got 'a'")):
        Task("job", ("a",))
    with pytest.raises(ValueError, match=re.escape("task 'job': variant names must be unique; 'a', 'b' repeated")):
        Task("job", (v("b"), v("a"), v("b", 0.7), v("a", 0.2), v("c")))
    with pytest.raises(ValueError, match=re.escape("task 'job' has no variant 'z'; its variants are a, b")):
        Task("job", (v("a"), v("b"))).variant("z")


def test_diamond_order_puts_every_task_after_its_upstream_ones():
    # Listed out of order on purpose: the order must come from the edges, ties by listing.
    edges = (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"))
    pipeline = Pipeline("diamond", (t("d"), t("c"), t("b"), t("a")), edges)
    order = names(pipeline.order())
    assert order == ("a", "c", "b", "d")  # after a, c is listed before b
    assert all(order.index(up) < order.index(down) for up, down in edges)
    assert names(pipeline.sources()) == ("a",) and names(pipeline.sinks()) == ("d",)
    assert pipeline.task("b").name == "b" and pipeline.edges == edges


def test_a_single_task_is_a_pipeline_and_fan_out_has_several_sinks():
    alone = Pipeline("one", [t("x")])
    assert names(alone.order()) == names(alone.sources()) == names(alone.sinks()) == ("x",)
    fan = Pipeline("fan", (t("s"), t("l"), t("r")), [["s", "l"], ["s", "r"]])
    assert names(fan.sinks()) == ("l", "r") and fan.edges == (("s", "l"), ("s", "r"))


@pytest.mark.parametrize("tasks, edges, message", [
    ((), (), "pipeline 'p': tasks must list at least one Task, got ()"),
    ((t("a"), t("a")), (), "pipeline 'p': task names must be unique; 'a' repeated"),
    ((t("a"), t("b")), (("a", "c"),), "pipeline 'p': edge ('a', 'c') names unknown task 'c'; the tasks are a, b"),
    ((t("a"), t("b")), (("a",),), "pipeline 'p': an edge must be (upstream, downstream) task names, got ('a',)"),
    ((t("a"), t("b")), ("ab",), "pipeline 'p': an edge must be (upstream, downstream) task names, got 'ab'"),
    ((t("a"), t("b")), (("a", "b"), ("a", "b")), "pipeline 'p': edge ('a', 'b') is listed more than once"),
    ((t("a"), t("b"), t("c")), (("a", "b"), ("b", "c"), ("c", "a")),
     "pipeline 'p': edges form a cycle b -> c -> a -> b; a pipeline must be acyclic"),
    ((t("a"), t("b"), t("c")), (("a", "b"), ("b", "c"), ("c", "b")),
     "pipeline 'p': edges form a cycle c -> b -> c"),
    ((t("a"), t("b")), (("a", "b"), ("b", "b")), "pipeline 'p': edges form a cycle b -> b"),
    ((t("a"), t("b"), t("c"), t("d")), (("a", "b"),),
     "pipeline 'p': not connected; 'c', 'd' not linked to 'a' by any edges"),
])
def test_pipeline_errors_name_the_field_and_value(tasks, edges, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Pipeline("p", tasks, edges)


def test_pipeline_refuses_a_non_task_and_an_unknown_lookup():
    with pytest.raises(TypeError, match=re.escape("pipeline 'p': tasks must be Task objects, got 'a'")):
        Pipeline("p", ("a",))
    with pytest.raises(ValueError, match=re.escape("pipeline 'p' has no task 'z'; its tasks are a")):
        Pipeline("p", (t("a"),)).task("z")
    with pytest.raises(ValueError, match=re.escape("pipeline: name must be a non-empty string, got 3")):
        Pipeline(3, (t("a"),))


def test_resnet_menu_is_torchvisions_published_top1():
    depths = (18, 34, 50, 101, 152)
    assert [(x.name, x.model) for x in RESNET.variants] == [(f"resnet{d}", f"resnet{d}") for d in depths]
    # The figures are exact decimals; 1e-12 is float rounding of score / 100.
    published = [69.758, 73.314, 76.130, 77.374, 78.312]
    assert [x.accuracy for x in RESNET.variants] == pytest.approx([p / 100 for p in published], abs=1e-12)


def test_every_menu_is_sorted_and_keyed_by_its_task_name():
    assert set(FAMILIES) == {"classification", "detection", "language-id", "translation", "summarisation"}
    for name, task in FAMILIES.items():
        assert task.name == name
        accuracies = [x.accuracy for x in task.variants]
        assert accuracies == sorted(accuracies) and all(0 < a < 1 for a in accuracies)
    assert {name: p.name for name, p in PIPELINES.items()} == {"video": "video", "nlp": "nlp",
                                                               "classification_gpu": "classification_gpu"}
    assert [x.name for x in PIPELINES["classification_gpu"].tasks[0].variants] == ["vgg13", "resnet50"]
    # The research notes' ROUGE-L order is also the distillation order 1-1 ... 12-6.
    assert [x.name.removeprefix("distilbart-xsum-") for x in SUMMARISATION.variants] == [
        "1-1", "12-1", "6-6", "12-3", "9-6", "12-6"]
    assert SUMMARISATION.variants[-1].accuracy == pytest.approx(0.3699, abs=1e-12)


def test_the_pipelines_run_detector_then_classifier_and_langid_translate_summarise():
    assert names(VIDEO.order()) == ("detection", "classification")
    assert names(VIDEO.sources()) == ("detection",) and names(VIDEO.sinks()) == ("classification",)
    assert [x.name for x in VIDEO.task("detection").variants] == [f"yolov5{s}" for s in "nsmlx"]
    assert VIDEO.task("classification") is RESNET
    assert names(NLP.order()) == ("language-id", "translation", "summarisation")
    assert [x.accuracy for x in NLP.task("translation").variants] == pytest.approx([0.331, 0.344], abs=1e-12)
    assert NLP.task("language-id").variants[0].accuracy == pytest.approx(0.9959, abs=1e-12)


def test_every_variant_model_is_one_the_profiler_builds(torch):
    from servesim.workloads.torch_models import MODELS

    models = [x.model for task in FAMILIES.values() for x in task.variants]
    assert len(set(models)) == len(models) == 5 + 5 + 1 + 2 + 6
    assert set(models) <= set(MODELS)
