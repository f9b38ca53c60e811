"""Exit-policy benchmark: how long T-Tamer's σ table takes to build, and what a decision
costs per batch.

(a) **σ-table construction**, 12 exits × 1000 loss bins: ``solve_recall`` (the backward
    DP with recall, one 1000×1000 matrix product per exit, and the σ crossing) on a
    chain with dense kernels; the same after soft state aggregation to q = 100
    meta-states (``aggregate`` + ``solve_recall``); the no-recall DP; and a whole
    ``TTamer.fit`` on a synthetic behaviour table of 50,000 samples (loss grid,
    calibration, kernel counting, DP). Best of 3 each. Target: the exact DP <= 2 s.
(b) **decision cost**: ``TTamer.decide`` and ``ConfidenceThreshold.decide`` for batches
    of 1, 16 and 64 requests, microseconds per call averaged over the 12 exit indices
    (a call at exit i sees i+1 columns), best of 5 rounds.

The synthetic table: a latent per-input score follows an AR(1) walk across exits that
drifts upwards (deeper exits are more confident); confidence is its logistic, and an
exit is right with probability confidence^1.5 (heads are overconfident), so the
calibrated loss differs from 1 - confidence. The last line printed is one JSON object.

    python bench/exits.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from servesim.policies.exit import ConfidenceThreshold, ExitObservation  # noqa: E402
from servesim.policies.stopping import MarkovChain, TTamer, aggregate, solve_no_recall, solve_recall  # noqa: E402

EXITS, BINS, SSA_Q, SAMPLES = 12, 1000, 100, 50_000
BATCHES = (1, 16, 64)
TARGET_BUILD_S = 2.0
SEED = 20250922


def synthetic_table(rng: np.random.Generator, n: int = SAMPLES, n_exits: int = EXITS):
    """A stand-in with BehaviourTable's attribute names (see the module docstring)."""
    score = np.empty((n, n_exits))
    score[:, 0] = rng.normal(0.0, 1.0, n)
    for j in range(1, n_exits):
        score[:, j] = 0.8 * score[:, j - 1] + 0.35 + rng.normal(0.0, 0.6, n)
    confidence = 1.0 / (1.0 + np.exp(-score))
    correct = rng.random((n, n_exits)) < confidence ** 1.5
    agrees = correct == correct[:, -1:]
    return SimpleNamespace(confidence=confidence, correct=correct, agrees=agrees, prediction=None,
                           entropy=None, exit_names=tuple(f"e{j}" for j in range(n_exits)),
                           n_samples=n, n_exits=n_exits)


def dense_chain(rng: np.random.Generator) -> MarkovChain:
    values = (np.arange(BINS) + 0.5) / BINS
    kernels = [rng.dirichlet(np.full(BINS, 0.05), size=BINS) for _ in range(EXITS - 1)]
    return MarkovChain(values, np.full(BINS, 1.0 / BINS), kernels, np.full(EXITS, 0.5 / EXITS))


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def decide_us(policy, table, batch: int, calls_per_exit: int = 300, rounds: int = 5) -> float:
    """Mean µs per decide() call over the exit indices 0..E-1, best of ``rounds``."""
    observations = [ExitObservation(i, EXITS, np.ascontiguousarray(table.confidence[:batch, : i + 1]), None, None)
                    for i in range(EXITS)]

    def sweep():
        for obs in observations:
            for _ in range(calls_per_exit):
                policy.decide(obs)

    return best_of(rounds, sweep) / (EXITS * calls_per_exit) * 1e6


def main() -> int:
    rng = np.random.default_rng(SEED)
    chain = dense_chain(rng)
    table = synthetic_table(rng)
    costs = np.full(EXITS, 1.0 / EXITS)
    figures = {
        "sigma_build_s_12x1000": best_of(3, lambda: solve_recall(chain)),
        "sigma_build_s_12x1000_ssa100": best_of(3, lambda: solve_recall(aggregate(chain, SSA_Q))),
        "no_recall_dp_s_12x1000": best_of(3, lambda: solve_no_recall(chain)),
        "ttamer_fit_s_50k_12x1000": best_of(3, lambda: TTamer(0.5, bins=BINS).fit(table, costs)),
    }
    ttamer = TTamer(0.5, bins=BINS).fit(table, costs)
    threshold = ConfidenceThreshold(0.8)
    figures["decide_us"] = {
        policy.name: {str(b): round(decide_us(policy, table, b), 2) for b in BATCHES}
        for policy in (ttamer, threshold)
    }

    print(f"exit policies, {EXITS} exits x {BINS} loss bins (best of 3)")
    for key in ("sigma_build_s_12x1000", "sigma_build_s_12x1000_ssa100", "no_recall_dp_s_12x1000",
                "ttamer_fit_s_50k_12x1000"):
        print(f"  {key:<32} {figures[key]:8.3f} s")
    met = "met" if figures["sigma_build_s_12x1000"] <= TARGET_BUILD_S else "MISSED"
    print(f"  target: exact sigma build <= {TARGET_BUILD_S} s -- {met}")
    print("decide(), us per call (mean over exits 0..11)")
    print(f"  {'policy':<22}" + "".join(f"{'batch ' + str(b):>12}" for b in BATCHES))
    for name, row in figures["decide_us"].items():
        print(f"  {name:<22}" + "".join(f"{row[str(b)]:>12.2f}" for b in BATCHES))
    for key in ("sigma_build_s_12x1000", "sigma_build_s_12x1000_ssa100", "no_recall_dp_s_12x1000",
                "ttamer_fit_s_50k_12x1000"):
        figures[key] = round(figures[key], 4)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
