"""A contention table derived from a profile's own batch curve (workloads/derived_contention.py):
the merged-batch rule's values, its label in the sidecar, and what it does to a run with
two instances. The command line: tests/experiments/test_contention_command.py."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from servesim.policies.batching import DynamicBatcher
from servesim.sim import simulate
from servesim.traces.trace import Trace
from servesim.workloads import CostModel, Profile, ProfileError, load_profile
from servesim.workloads.contention import contention_path
from servesim.workloads.derived_contention import derive, merged_batch_slowdown

METADATA = {"device": "cpu:test", "dtype": "float32", "framework": "none", "date": "2024-01-01",
            "execution_mode": "eager"}
SIZES = (1, 2, 4, 8)


def profile_of(curve: dict[int, float], stages=(("s", 1.0),), repeats=7) -> Profile:
    """A profile of model 'm' on 'hw' whose batch of b takes ``curve[b]`` ms, split over
    ``stages`` (name, share)."""
    rows = [("hw", "m", stage, b, ms * share, ms * share, ms * share, repeats)
            for b, ms in curve.items() for stage, share in stages]
    return Profile.from_rows(rows, METADATA)


FLAT = profile_of({b: 1.0 for b in SIZES})  # a batch leaves the device idle: S does not grow
LINEAR = profile_of({b: 0.5 * b for b in SIZES})  # a batch saturates it: S through the origin
# two stages (40% and 60%) whose summed medians are 1, 2, 5 ms at batch 1, 4, 16
BENT = profile_of({1: 1.0, 4: 2.0, 16: 5.0}, stages=(("a", 0.4), ("b", 0.6)), repeats=9)


@pytest.mark.parametrize("profile, expected", [(FLAT, lambda k: 1.0), (LINEAR, float)], ids=["flat", "linear"])
def test_a_flat_curve_overlaps_for_free_and_a_linear_one_serialises(profile, expected):
    derived = derive(profile, "hw", "m", 4, "p.csv")
    table = derived.table
    assert table.sizes == SIZES and table.max_instances == 4
    for k, row in enumerate(table.slowdown, 2):
        assert row == pytest.approx([expected(k)] * len(SIZES), rel=1e-12), k
    # k * b beyond batch 8 is extended with the last slope (0, or 0.5 ms per item): the same answer
    assert derived.extrapolated == (4, 8)


def test_between_measured_sizes_linear_and_beyond_them_the_last_per_item_slope():
    cost = CostModel(BENT, "m")
    # S(3) = 1 + 2/3 (1 to 2 ms over 1..4), S(6) = 2 + 2/12 * 3 = 2.5 (2 to 5 ms over 4..16)
    assert merged_batch_slowdown(cost, 2, 3) == pytest.approx(2.5 / (1 + 2 / 3), rel=1e-12)
    # S(32): the last measured slope, 3 ms over 12 items, from 5 ms at 16: 5 + 16 * 0.25 = 9
    assert merged_batch_slowdown(cost, 2, 16) == pytest.approx(9 / 5, rel=1e-12)
    derived = derive(BENT, "hw", "m", 2, "p.csv")
    # S(2) = 1 + 1/3, S(8) = 2 + 4/12 * 3 = 3
    assert derived.table.slowdown == (pytest.approx((4 / 3, 3 / 2, 9 / 5), rel=1e-12),)
    assert derived.extrapolated == (16,) and derived.table.repeats == ((9, 9, 9),)


def test_the_label_is_saved_and_read_back_and_a_table_without_one_is_measured(tmp_path):
    table = derive(BENT, "hw", "m", 3, "p.csv").table
    replace(BENT, contention={("hw", "m"): table}).save(tmp_path / "p.csv")
    loaded = load_profile(tmp_path / "p.csv").contention["hw", "m"]
    assert loaded == table and loaded.source == "derived: merged-batch from p.csv" and loaded.derived
    # the first version's file, without the source column: measured
    contention_path(tmp_path / "p.csv").write_text(
        "hardware,model,instances,batch_size,slowdown,repeats\nhw,m,2,1,1.5,3\nhw,m,2,4,1.7,3\n")
    loaded = load_profile(tmp_path / "p.csv").contention["hw", "m"]
    assert loaded.source == "measured" and not loaded.derived and loaded.slowdown == ((1.5, 1.7),)


@pytest.mark.parametrize("rows, message", [
    ("hw,m,2,1,1.5,3,measured\nhw,m,2,4,1.7,3,derived: merged-batch from p.csv\n",
     r"line 3: source 'derived: merged-batch from p.csv', and an earlier row .* says 'measured'"),
    ("hw,m,2,1,1.5,3,guessed\n", r"line 2: source 'guessed' must be 'measured' or 'derived:'"),
    ("hw,m,2,1,1.5,3,derived:\n", r"line 2: source 'derived:' must be"),
])
def test_a_bad_source_is_refused_naming_its_line(tmp_path, rows, message):
    BENT.save(tmp_path / "p.csv")
    contention_path(tmp_path / "p.csv").write_text("hardware,model,instances,batch_size,slowdown,repeats,source\n"
                                                  + rows)
    with pytest.raises(ProfileError, match=message):
        load_profile(tmp_path / "p.csv")


def burst_end(profile: Profile, instances: int) -> float:
    """When 64 requests arriving at once are all served in batches of 4 by ``instances``
    instances sharing one device."""
    results = simulate(Trace(np.zeros(64)), CostModel(profile, "m"), DynamicBatcher(4), instances=instances)
    return float(results.requests.finish.max())


@pytest.mark.parametrize("profile, speedup", [(FLAT, 2.0), (LINEAR, 1.0)], ids=["flat", "linear"])
def test_two_instances_on_a_derived_table_pay_off_where_the_curve_is_flat_only(profile, speedup):
    shared = replace(profile, contention={("hw", "m"): derive(profile, "hw", "m", 2, "p.csv").table})
    # 16 batches of 4: one instance runs them one after another; two run them in pairs, each
    # stretched by S(8)/S(4): 1 where S is flat (8 pairs in half the time), 2 where it is linear
    assert burst_end(shared, 1) / burst_end(shared, 2) == pytest.approx(speedup, rel=1e-9)
