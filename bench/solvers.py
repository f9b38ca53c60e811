"""Solver benchmark: how long one decision of IPA's and InfAdapter's programs takes.

(a) **IPA** (``policies.ipa.solve``, accuracy method ``sum``), 5 stages × 6 variants × 7
    batch sizes (1 … 64): up to 210 binaries, one per (stage, variant, batch) that can carry
    the load. There are 20 seeded instances, shaped like IPA's CPU profiles. In each
    stage the variants get sorted accuracies in [0.4, 0.95], base allocations of 1 … 8
    cores that grow with accuracy, and a batch-1 p99 latency of 50–200 ms × 1.5^rank
    (the notebooks' CPU numbers: yolov5n 93 ms at batch 1 on 2 cores, resnet50 0.83 s at
    batch 8). Latency is linear in the batch, l(b) = l(1)·(1 + s·(b − 1)) with s in
    [0.3, 0.9]. Throughput h(b) = b / l(b) therefore saturates, as the measured ones do.
    The load is λ ~ U(3, 34) req/s (the video experiments' range). The SLA is U(0.6, 2.5)
    × the stage's mean batch-1 latency, summed over stages. With the seed below, the SLA
    lowers the optimum in 13 of the 20 instances (checked by re-solving them without an
    SLA), so the knapsack is not idle. Target: max ≤ 200 ms per decision (IPA's
    adaptation interval is 10 s).
(b) **InfAdapter** (``policies.infadapter.solve``), 5 variants × a 20-core budget: 95
    binaries. The variants are ResNet-18 … 152 with the accuracies and load times of
    shared/research/ipa_infadapter.md §2. Their capacities come from linear fits like the
    measured ones (ResNet-18 about 24 req/s per core, ResNet-152 about 3.5), each
    scaled by U(0.9, 1.1) per instance, with 80% headroom. There are 20 decisions in a
    row at λ ~ U(27, 274) (the §2 trace's range), each starting from the previous
    decision's cores, and the first from ResNet-152 on 20 cores (InfAdapter's initial
    state). A λ above what 20 cores can carry would take the best-effort path (two more
    solves); with these fits 20 cores carry about 380 req/s, so none does.

Timing: ``time.perf_counter`` around ``solve`` (building the options and matrices, and
HiGHS), after one untimed warm-up solve. Median and max over the instances. The last
line printed is one JSON object.

    python bench/solvers.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from servesim.policies import infadapter, ipa  # noqa: E402

SEED = 20261202
INSTANCES = 20
IPA_STAGES, IPA_VARIANTS, IPA_BATCHES = 5, 6, (1, 2, 4, 8, 16, 32, 64)
IPA_TARGET_MS = 200.0
BUDGET = 20
RESNETS = (  # name, top-1 accuracy, load time (s), capacity slope (req/s per core), intercept
    ("resnet18", 0.698, 6.44, 23.9, -5),
    ("resnet34", 0.733, 6.79, 13.0, -3),
    ("resnet50", 0.761, 6.82, 8.0, -2),
    ("resnet101", 0.774, 7.77, 5.0, -2),
    ("resnet152", 0.783, 8.52, 3.5, -2),
)


def ipa_instance(rng: np.random.Generator) -> ipa.PipelineProblem:
    stages, sla = [], 0.0
    for s in range(IPA_STAGES):
        accuracy = np.sort(rng.uniform(0.4, 0.95, IPA_VARIANTS))
        cores = np.sort(rng.choice([1, 2, 4, 8], IPA_VARIANTS))
        first = rng.uniform(0.05, 0.2, IPA_VARIANTS) * 1.5 ** np.arange(IPA_VARIANTS)
        variants = []
        for m in range(IPA_VARIANTS):
            slope = rng.uniform(0.3, 0.9)
            latency = [first[m] * (1 + slope * (b - 1)) for b in IPA_BATCHES]
            variants.append(ipa.StageVariant(f"s{s}m{m}", float(accuracy[m]), int(cores[m]), IPA_BATCHES,
                                             tuple(latency), tuple(b / l for b, l in zip(IPA_BATCHES, latency))))
        stages.append(ipa.Stage(f"stage{s}", tuple(variants)))
        sla += rng.uniform(0.6, 2.5) * float(first.mean())
    return ipa.PipelineProblem(tuple(stages), load=float(rng.uniform(3, 34)), sla=sla)


def infadapter_problem(rng: np.random.Generator, current: tuple[int, ...]) -> infadapter.AllocationProblem:
    variants = tuple(infadapter.Variant(name, acc, infadapter.linear_capacity(slope * rng.uniform(0.9, 1.1),
                                                                               intercept, BUDGET), load)
                     for name, acc, load, slope, intercept in RESNETS)
    return infadapter.AllocationProblem(variants, load=float(rng.uniform(27, 274)), budget=BUDGET,
                                        current_cores=current)


def timed(solve, problem):
    t0 = time.perf_counter()
    answer = solve(problem)
    return (time.perf_counter() - t0) * 1e3, answer


def main() -> int:
    rng = np.random.default_rng(SEED)
    print(f"solver benchmark: {INSTANCES} instances each, python {sys.version.split()[0]}")

    problems = [ipa_instance(rng) for _ in range(INSTANCES + 1)]
    ipa.solve(problems[0])  # warm-up
    runs = [timed(ipa.solve, p) for p in problems[1:]]
    ipa_ms = [ms for ms, _ in runs]
    ipa_feasible = sum(config is not None for _, config in runs)
    ipa_median, ipa_max = statistics.median(ipa_ms), max(ipa_ms)
    met = "met" if ipa_max <= IPA_TARGET_MS else "NOT met"
    print(f"(a) IPA {IPA_STAGES} stages x {IPA_VARIANTS} variants x {len(IPA_BATCHES)} batches: "
          f"median {ipa_median:.1f} ms, max {ipa_max:.1f} ms ({met}: target max <= {IPA_TARGET_MS:g} ms); "
          f"{ipa_feasible}/{INSTANCES} feasible")

    current = tuple(BUDGET if name == "resnet152" else 0 for name, *_ in RESNETS)
    inf_ms, inf_feasible = [], 0
    for i in range(INSTANCES + 1):
        ms, allocation = timed(infadapter.solve, infadapter_problem(rng, current))
        if i:  # the first decision is the warm-up
            inf_ms.append(ms)
            inf_feasible += allocation.feasible
        current = allocation.cores
    inf_median, inf_max = statistics.median(inf_ms), max(inf_ms)
    print(f"(b) InfAdapter {len(RESNETS)} variants x {BUDGET} cores: median {inf_median:.1f} ms, "
          f"max {inf_max:.1f} ms; {inf_feasible}/{INSTANCES} feasible")

    print(json.dumps({
        "ipa_5x6x7_median_ms": round(ipa_median, 2), "ipa_5x6x7_max_ms": round(ipa_max, 2),
        "ipa_target_max_ms": IPA_TARGET_MS, "ipa_feasible": ipa_feasible,
        "infadapter_5x20_median_ms": round(inf_median, 2), "infadapter_5x20_max_ms": round(inf_max, 2),
        "infadapter_feasible": inf_feasible, "instances": INSTANCES,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
