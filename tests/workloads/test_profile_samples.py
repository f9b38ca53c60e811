"""Raw samples beside a profile (``X.samples.npz``) and the ``measured`` noise that draws
from them: the round trip, the checks that refuse a stale or broken sidecar by name,
and a measured tail (rare stalls) that three percentiles cannot carry but the samples do.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from servesim.workloads import CostModel, Profile, ProfileError, load_profile
from servesim.workloads.noise import Empirical, Measured, PerBatch
from servesim.workloads.profile import KEY_SEPARATOR, samples_path

METADATA = {"device": "cpu:test", "dtype": "float32", "framework": "none", "date": "2026-12-06",
            "execution_mode": "eager"}
# 1,000 calls of 1 ms at batch 1 with ten stalls of 10 ms; at batch 4 the same, twice as long
STALLS = np.concatenate([np.full(990, 1.0), np.full(10, 10.0)])


def _profile(samples=None) -> Profile:
    samples = {("hw", "m", "s", 1): STALLS, ("hw", "m", "s", 4): 2 * STALLS} if samples is None else samples
    rows = [("hw", "m", "s", b, *np.round(np.percentile(v, [50, 90, 99]), 4).tolist(), v.size)
            for (_, _, _, b), v in samples.items()]
    return Profile.from_rows(rows, METADATA, samples=samples)


def test_samples_survive_a_round_trip_and_the_table_stays_as_it_was(tmp_path):
    path = tmp_path / "p.csv"
    profile = _profile()
    profile.save(path)
    assert samples_path(path).name == "p.samples.npz" and samples_path(path).exists()
    loaded = load_profile(path)
    assert (loaded.rows, loaded.metadata) == (profile.rows, profile.metadata)
    assert set(loaded.samples) == set(profile.samples)
    assert all(np.array_equal(loaded.samples[k], profile.samples[k]) for k in profile.samples)
    table = path.read_text()
    Profile(profile.rows, profile.metadata).save(path)  # the same table without samples...
    assert path.read_text() == table and not samples_path(path).exists()  # ...removes the sidecar


def _resave_sidecar(path, **arrays) -> None:
    with np.load(samples_path(path)) as data:
        fields = {key: data[key] for key in data.files}
    fields.update(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **fields)
    samples_path(path).write_bytes(buffer.getvalue())


@pytest.mark.parametrize("change, message", [
    (lambda p: _resave_sidecar(p, values_ms=np.concatenate([STALLS + 0.5, 2 * STALLS])), "median"),
    (lambda p: _resave_sidecar(p, keys=np.array([KEY_SEPARATOR.join(["hw", "m", "s", "2"]),
                                                 KEY_SEPARATOR.join(["hw", "m", "s", "4"])])), "not a row"),
    (lambda p: _resave_sidecar(p, counts=np.array([999, 1000])), "do not fit together"),
    (lambda p: _resave_sidecar(p, values_ms=np.concatenate([STALLS, 2 * STALLS, [1.0]]),
                               counts=np.array([1001, 1000])), "repeats"),
    (lambda p: _resave_sidecar(p, keys=np.array(["hw/m/s/1", "hw/m/s/4"])), "is not hardware, model, stage"),
    (lambda p: samples_path(p).write_bytes(b"not a zip"), "not a raw-samples sidecar"),
    (lambda p: _resave_sidecar(p, keys=np.array([("hw", "m", "s", 1), ("hw", "m", "s", 4)], dtype=object)),
     "not a raw-samples sidecar"),  # an object array needs pickle, which is never allowed
])
def test_a_stale_or_broken_sidecar_is_refused_by_name(tmp_path, change, message):
    path = tmp_path / "p.csv"
    _profile().save(path)
    change(path)
    with pytest.raises(ProfileError, match=message) as caught:
        load_profile(path)
    assert str(samples_path(path)) in str(caught.value)


def test_samples_given_in_code_are_checked_too():
    with pytest.raises(ProfileError, match="repeats"):
        Profile.from_rows([("hw", "m", "s", 1, 1.0, 1.0, 10.0, 5)], METADATA,
                          samples={("hw", "m", "s", 1): STALLS})
    with pytest.raises(ProfileError, match="finite and > 0"):
        Profile.from_rows([("hw", "m", "s", 1, 1.0, 1.0, 1.0, 3)], METADATA,
                          samples={("hw", "m", "s", 1): np.array([1.0, 1.0, np.nan])})


def test_measured_noise_carries_the_stalls_the_percentiles_cannot():
    """1% of calls stalled at 10 ms. The samples' p99 is 1.09 ms, so percentiles never
    draw over 1.1 ms; drawing from the samples stalls 1% of the time, as measured."""
    profile = _profile()
    draws = {}
    for noise in (Measured(), Empirical()):
        sample = CostModel(profile, "m", noise=noise).sampler(np.random.default_rng(0))
        draws[type(noise).__name__] = np.array([sample(1) for _ in range(100_000)]) * 1e3
    assert np.mean(draws["Measured"] >= 10.0) == pytest.approx(0.01, abs=0.002)
    assert draws["Empirical"].max() < 1.2
    assert np.median(draws["Measured"]) == 1.0


def test_between_measured_sizes_the_shape_below_is_scaled_to_the_interpolated_median():
    """Batch 2 lies a third of the way from 1 (1 ms) to 4 (2 ms): median 4/3 ms, and the
    batch-1 shape, so its stalls take 40/3 ms."""
    sample = CostModel(_profile(), "m", noise=Measured()).sampler(np.random.default_rng(1))
    draws = np.array([sample(2) for _ in range(20_000)]) * 1e3
    assert set(np.round(np.unique(draws), 9)) == {round(4 / 3, 9), round(40 / 3, 9)}


def test_measured_noise_needs_samples_and_says_where_they_are_missing():
    profile = _profile()
    bare = Profile(profile.rows, profile.metadata, "bare.csv")
    with pytest.raises(ProfileError, match=r"bare.csv: .*stage 's' .* at batch size 1 .*samples.npz"):
        CostModel(bare, "m", noise=Measured())


def test_per_batch_noise_takes_whole_batches_from_their_samples_unless_told_otherwise():
    from servesim.workloads.exits import ExitModel, SegmentCosts

    stages = {"b1": 1.0, "r1": 0.1, "b2": 1.0}
    rows = [("hw", "ee", s, 1, ms, ms, ms, 1) for s, ms in stages.items()]
    rows += [("hw", "ee_host", s, 1, 0.01, 0.01, 0.01, 1) for s in ("batch", "exit", "leave", "final")]
    total = 2.1 * STALLS
    rows.append(("hw", "ee_host", "total", 1, *np.round(np.percentile(total, [50, 90, 99]), 4).tolist(), total.size))
    profile = Profile.from_rows(rows, METADATA, samples={("hw", "ee_host", "total", 1): total})
    model = ExitModel.early_exit(profile, "ee", {"b1": "r1"})
    assert isinstance(SegmentCosts(profile, model, host="ee_host", noise=PerBatch()).total.noise, Measured)
    assert isinstance(SegmentCosts(profile, model, host="ee_host", noise=PerBatch("percentiles")).total.noise,
                      Empirical)
    with pytest.raises(ValueError, match="spread must be one of"):
        PerBatch("stalls")


def test_a_slowed_profile_scales_one_hardwares_rows_and_samples_and_keeps_the_rest():
    """``Profile.slowed``: a time-shared device's profile is the device's, its kernels
    slower by the measured factor; other hardware and the kept stages are as measured."""
    samples = {("hw", "m", "s", 1): STALLS, ("other", "m", "s", 1): STALLS, ("hw", "m", "load", 1): STALLS}
    rows = [(h, m, stage, b, *np.round(np.percentile(STALLS, [50, 90, 99]), 4).tolist(), STALLS.size)
            for (h, m, stage, b) in samples]
    profile = Profile.from_rows(rows, METADATA, samples=samples)
    slowed = profile.slowed("hw", 1.5, keep=("load",))
    by_key = {(r.hardware, r.stage): r for r in slowed.rows}
    assert by_key[("hw", "s")].latency_p99_ms == pytest.approx(1.5 * np.percentile(STALLS, 99), rel=1e-3)
    assert by_key[("other", "s")].latency_p50_ms == pytest.approx(1.0)
    assert by_key[("hw", "load")].latency_p50_ms == pytest.approx(1.0)
    np.testing.assert_allclose(slowed.samples[("hw", "m", "s", 1)], 1.5 * STALLS)
    np.testing.assert_array_equal(slowed.samples[("other", "m", "s", 1)], STALLS)
    with pytest.raises(ValueError, match="slowdown must be a finite number >= 1"):
        profile.slowed("hw", 0.9)
