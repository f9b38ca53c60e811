"""A run reports the batch sizes it ran whose latency was interpolated where the
profile's own points put the error at 5% or more (issue 15, item 5)."""

from servesim.policies.batching import DynamicBatcher
from servesim.sim import simulate, summarize

from enginekit import make_cost, poisson_trace


def test_the_summary_names_the_interpolated_sizes_and_their_batches():
    # 1, 2, 4, 12 ms at 1, 2, 4, 8: sizes 5-7 interpolate a bend a third off; 3 is exact
    cost = make_cost({1: 1.0, 2: 2.0, 4: 4.0, 8: 12.0})
    results = simulate(poisson_trace(700.0, 4000, seed=5), cost, DynamicBatcher(8, 0.002))
    sizes = results.requests.batch_size
    report = summarize(results)["profile_interpolation"]
    assert set(report) == {str(b) for b in (5, 6, 7) if (sizes == b).any()} and report
    for size, entry in report.items():
        assert entry["error_estimate"] == round(1 / 3, 4)
        assert entry["batches"] == int((sizes == int(size)).sum()) // int(size)


def test_a_measured_or_straight_profile_reports_nothing():
    cost = make_cost({b: 1.0 + 0.5 * b for b in (1, 2, 4, 8)})
    results = simulate(poisson_trace(700.0, 2000, seed=5), cost, DynamicBatcher(8, 0.002))
    assert "profile_interpolation" not in summarize(results) and results.interpolated == {}
