"""``VariantCosts`` on the shipped variant profile: a variant's cost at each core count
it was measured on, its cold start, and the figures the adapters plan with, all read
off the same rows."""

from __future__ import annotations

import pytest

from servesim.workloads import PROFILES_DIR, ProfileError, load_profile
from servesim.workloads.variant_costs import VariantCosts
from servesim.workloads.variants import VIDEO


@pytest.fixture(scope="module")
def costs():
    return VariantCosts(load_profile(PROFILES_DIR / "cpu_video.csv"), VIDEO)


def test_each_core_count_reads_its_own_rows(costs):
    profile = costs.profile
    assert costs.cores_profiled("classification", "resnet50") == (1, 2)
    for cores in (1, 2):
        (row,) = [r for r in profile.rows_for("resnet50", "forward", f"cpu-{cores}c") if r.batch_size == 8]
        assert costs.cost_model("classification", "resnet50", cores).batch_latency(8) == pytest.approx(row.latency_p50_ms / 1e3)
        assert costs.p99("classification", "resnet50", cores, 8) == pytest.approx(row.latency_p99_ms / 1e3)
        assert costs.throughput("classification", "resnet50", cores, 8, lanes=3) == pytest.approx(3 * 8 / (row.latency_p50_ms / 1e3))


def test_the_cold_start_is_the_fewest_cores_measurement(costs):
    (row,) = costs.profile.rows_for("yolov5m_load", "load", "cpu-1c")
    assert costs.load_time("detection", "yolov5m") == pytest.approx(row.latency_p50_ms / 1e3)


def test_an_unmeasured_core_count_or_model_is_refused_by_name(costs):
    with pytest.raises(ProfileError, match=r"'resnet18' \(variant 'resnet18'\) was not measured on 4 core\(s\)"):
        costs.cost_model("classification", "resnet18", 4)
    with pytest.raises(ProfileError, match="cpu_nlp.csv: no model 'yolov5n' \\(variant 'yolov5n' of task 'detection'\\)"):
        VariantCosts(load_profile(PROFILES_DIR / "cpu_nlp.csv"), VIDEO)
