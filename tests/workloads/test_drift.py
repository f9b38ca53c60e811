"""Drifting behaviour: requests draw rows of the regime live at their arrival, the
generators produce the regimes they document, and a threshold tuned on the bootstrap
(the first regime) breaks a 1% agreement budget later: the property the Apparate
experiment relies on."""

import numpy as np
import pytest
from scipy.stats import chisquare

from servesim.policies.offline import BestStatic, BranchyNet
from servesim.workloads.behaviour import BehaviourTable, synthetic
from servesim.workloads.drift import (
    TOPIC_REGIMES, VIDEO_REGIMES, DriftingBehaviour, Regime, regime_table, topic_drift, video_drift,
)

COSTS = [0.25, 0.25, 0.25, 0.25]
BUDGET = 0.01


def marked(n_rows):
    """Three regimes of ``n_rows`` rows, each row's regime readable from its confidence."""
    tables = [BehaviourTable(confidence=np.full((n, 2), 0.1 * (r + 1)), correct=np.ones((n, 2), bool),
                             agrees=np.ones((n, 2), bool), prediction=None, entropy=None,
                             exit_names=("ramp1", "final")) for r, n in enumerate(n_rows)]
    return DriftingBehaviour.concat(tables, [(0, 0), (10, 1), (25, 2), (40, 0)], ["a", "b", "c"])


# --- draw_samples -------------------------------------------------------------------

def test_every_request_draws_a_row_of_the_regime_live_at_its_arrival():
    drift = marked([5, 7, 3])
    edges = np.array([0.0, 10.0, 25.0, 40.0])
    times = np.concatenate([edges, np.nextafter(edges[1:], -np.inf), [1e9],
                            np.random.default_rng(0).uniform(0, 60, 2000)])
    expected = np.select([times < 10, times < 25, times < 40], [0, 1, 2], default=0)
    rows = drift.draw_samples(times, np.random.default_rng(1))
    assert rows.dtype == np.int64
    np.testing.assert_array_equal(drift.regime[rows], expected)
    np.testing.assert_array_equal(drift.regime_at(times), expected)
    np.testing.assert_allclose(drift.table.confidence[rows, 0], 0.1 * (expected + 1))


def test_draws_are_deterministic_given_the_rng():
    drift = marked([5, 7, 3])
    times = np.linspace(0, 50, 500)
    first = drift.draw_samples(times, np.random.default_rng(3))
    np.testing.assert_array_equal(first, drift.draw_samples(times, np.random.default_rng(3)))
    assert not np.array_equal(first, drift.draw_samples(times, np.random.default_rng(4)))
    assert drift.draw_samples([], np.random.default_rng(3)).shape == (0,)


def test_draws_are_uniform_within_a_regime():
    """40,000 draws over regime b's 40 rows: 1,000 expected per row, so a chi-square test
    at 39 degrees of freedom separates uniform from even a 10% tilt; fixed seed, so the
    p-value is a fixed number, asserted well away from rejection."""
    drift = marked([20, 40, 10])
    rows = drift.draw_samples(np.random.default_rng(5).uniform(10, 25, 40_000), np.random.default_rng(6))
    counts = np.bincount(rows, minlength=drift.table.n_samples)[drift.rows_of(1)]
    assert counts.sum() == 40_000
    assert chisquare(counts).pvalue > 0.01


@pytest.mark.parametrize("schedule, message", [
    ([(1.0, 0)], "start at 0"),
    ([(0.0, 0), (5.0, 1), (5.0, 2)], "strictly increasing"),
    ([(0.0, 0), (5.0, 3)], r"regime\(s\) \[3\]"),
    ([], "start at 0"),
])
def test_bad_schedules_are_refused(schedule, message):
    drift = marked([2, 2, 2])
    with pytest.raises(ValueError, match=message):
        DriftingBehaviour(drift.table, drift.regime, schedule, drift.regime_names)


def test_a_scheduled_regime_needs_rows_and_times_must_be_in_the_schedule():
    drift = marked([2, 2, 2])
    with pytest.raises(ValueError, match="no rows"):
        DriftingBehaviour(drift.table, np.zeros(6, int), [(0, 0), (3, 1)], drift.regime_names)
    with pytest.raises(ValueError, match=">= 0"):
        drift.draw_samples([-1.0], np.random.default_rng(0))


# --- the bootstrap ------------------------------------------------------------------

def test_the_bootstrap_holds_out_rows_of_the_first_regime_only():
    drift = video_drift(np.random.default_rng(0), samples_per_regime=400)
    boot, rest = drift.split_bootstrap(0.25, np.random.default_rng(1))
    assert boot.n_samples == 100
    assert np.bincount(rest.regime).tolist() == [300, 400, 400]
    assert rest.schedule == drift.schedule

    def rows(table):
        return sorted(map(tuple, table.confidence))
    first = drift.table.take(drift.rows_of(0))
    assert rows(first) == sorted(rows(boot) + rows(rest.table.take(rest.rows_of(0))))
    with pytest.raises(ValueError, match="empty part"):
        drift.split_bootstrap(1.0, np.random.default_rng(1))


# --- the generators -----------------------------------------------------------------

@pytest.mark.parametrize("make, regimes", [(video_drift, VIDEO_REGIMES), (topic_drift, TOPIC_REGIMES)])
def test_regimes_have_their_documented_accuracies(make, regimes):
    """Per exit, within 4 binomial standard errors of the documented accuracy."""
    n = 5000
    drift = make(np.random.default_rng(2), samples_per_regime=n)
    assert drift.regime_names == tuple(r.name for r in regimes)
    for r, regime in enumerate(regimes):
        accuracy = drift.table.take(drift.rows_of(r)).accuracy()
        p = np.array(regime.accuracy)
        assert (np.abs(accuracy - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-12).all(), (regime.name, accuracy)


def test_confidently_wrong_ramps_disagree_as_surely_as_they_agree():
    """With share 1 a ramp's disagreements carry right answers' confidences; with 0 they
    are visibly less sure. Entropy stays the softmax's (binary: a decreasing function of
    confidence) after the swap."""
    base = Regime("x", (0.8, 0.9, 0.95), persistence=0.5)
    plain = regime_table(base, 20_000, 2, np.random.default_rng(0))
    sure = regime_table(Regime("x", base.accuracy, 0.5, confidently_wrong=1.0), 20_000, 2, np.random.default_rng(0))
    for table, gap in ((plain, 0.05), (sure, None)):
        ramps = np.s_[:, :-1]
        right = table.confidence[ramps][table.correct[ramps] & table.agrees[ramps]].mean()
        off = table.confidence[ramps][~table.agrees[ramps]].mean()
        if gap is None:
            assert abs(right - off) < 0.01
        else:
            assert right - off > gap
    order = np.argsort(sure.confidence, axis=None)
    assert (np.diff(sure.entropy.ravel()[order]) <= 1e-12).all()


def test_video_scenes_alternate_easy_and_hard_with_the_documented_lengths():
    drift = video_drift(np.random.default_rng(3), duration_s=20_000.0, scene_s=30.0, samples_per_regime=50)
    starts, live = np.array(drift.schedule).T
    assert starts[0] == 0 and starts[-1] < 20_000
    assert (live[::2] == 0).all() and (live[1::2] > 0).all()
    hard = live[1::2]
    assert abs((hard == 1).mean() - 0.5) < 4 * np.sqrt(0.25 / hard.size)
    lengths = np.diff(starts)  # exponential, mean 30 s: standard error 30 / sqrt(count)
    assert abs(lengths.mean() - 30.0) < 4 * 30.0 / np.sqrt(lengths.size)


def test_topics_change_in_steps_and_cycle():
    drift = topic_drift(np.random.default_rng(0), segment_s=100.0, n_segments=5, samples_per_regime=50)
    assert drift.schedule == ((0.0, 0), (100.0, 1), (200.0, 2), (300.0, 0), (400.0, 1))


# --- the property the Apparate experiment relies on --------------------------------

@pytest.mark.parametrize("make", [video_drift, topic_drift])
@pytest.mark.parametrize("policy", [BestStatic, BranchyNet])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_threshold_tuned_on_the_bootstrap_breaks_the_budget_later(make, policy, seed):
    """Tuned on half the first regime's rows, the rule meets the budget there (and, up to
    sampling noise, on the first regime's other rows), but not on the whole drifting
    table, nor on the rows a uniform stream of requests draws over the schedule."""
    drift = make(np.random.default_rng(seed))
    boot, rest = drift.split_bootstrap(0.5, np.random.default_rng(seed + 100))
    tuned = policy(accuracy_budget=BUDGET).fit(boot, COSTS)
    assert tuned.fitted.agreement >= 1 - BUDGET and tuned.fitted.saving > 0.2
    assert tuned.replay(rest.table.take(rest.rows_of(0)), COSTS).agreement > 1 - BUDGET - 0.01
    assert tuned.replay(rest.table, COSTS).agreement < 1 - BUDGET - 0.03
    horizon = max(start for start, _ in drift.schedule) * 1.1
    arrivals = np.sort(np.random.default_rng(seed).uniform(0, horizon, 20_000))
    stream = rest.table.take(rest.draw_samples(arrivals, np.random.default_rng(seed + 1)))
    assert tuned.replay(stream, COSTS).agreement < 1 - BUDGET - 0.01


def test_the_regime_tables_are_plain_synthetic_tables_when_nothing_is_swapped():
    regime = Regime("x", (0.8, 0.9), persistence=0.3)
    assert regime_table(regime, 100, 3, np.random.default_rng(0)) == synthetic(
        100, regime.accuracy, persistence=0.3, n_classes=3, rng=np.random.default_rng(0))
