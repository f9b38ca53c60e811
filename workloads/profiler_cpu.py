"""Measure the shipped example profile: a small 3-stage float32 MLP ("mlp3") run
eagerly with numpy on the CPU.

Why this model: it needs nothing beyond numpy, so anyone can re-measure it on their own
machine in well under a minute, yet it is a real computation whose latency curve has the
usual shape (weight-bandwidth bound at batch 1, compute bound at batch 64). Each stage
is two dense layers with ReLU (1.3-2.1 M parameters), which puts batch 1 in the
hundreds of microseconds and batch 64 at a few milliseconds on one core.

BLAS uses one thread by default (``--threads``): it is the most repeatable setting.
Thread counts must be fixed before numpy is imported, and importing this module already
imported numpy (through ``workloads``), so :func:`main` re-runs itself in a child
process with the thread variables set when they are not.

    python -m servesim.workloads.profiler_cpu --out workloads/profiles/cpu_mlp.csv

``--model digits_ee`` times the trained early-exit network of :mod:`workloads.digits`
instead (stages block1, ramp1, ..., ramp3, block4; each ramp on its block's real
output, fed real held-out digits): the same weights that produced the shipped
behaviour table ``workloads/data/digits_ee.npz``.

    python -m servesim.workloads.profiler_cpu --model digits_ee --out workloads/profiles/cpu_digits_ee.csv

``--model mnist1d_ee``: the same network trained on MNIST-1D (40 inputs, not 64).

    python -m servesim.workloads.profiler_cpu --model mnist1d_ee --out workloads/profiles/cpu_mnist1d_ee.csv
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import os
import platform
import subprocess
import sys
import time
from typing import Callable

import numpy as np

from servesim.workloads.profile import Profile

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
# Stage name -> (input width, hidden width, output width).
MLP3 = {"block1": (512, 1024, 1024), "block2": (1024, 1024, 1024), "block3": (1024, 1024, 256)}
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def make_block(widths: tuple[int, int, int], rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """Dense -> ReLU -> dense -> ReLU with He-initialised float32 weights (so activations
    stay O(1) and no denormals slow the arithmetic)."""
    d_in, d_hidden, d_out = widths
    w1 = (rng.standard_normal((d_in, d_hidden)) * np.sqrt(2.0 / d_in)).astype(np.float32)
    w2 = (rng.standard_normal((d_hidden, d_out)) * np.sqrt(2.0 / d_hidden)).astype(np.float32)
    b1 = np.full(d_hidden, 0.01, np.float32)
    b2 = np.full(d_out, 0.01, np.float32)

    def block(x: np.ndarray) -> np.ndarray:
        h = x @ w1
        h += b1
        np.maximum(h, 0, out=h)
        y = h @ w2
        y += b2
        return np.maximum(y, 0, out=y)

    return block


def time_ms(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, warmup: int, repeats: int) -> np.ndarray:
    """Wall time of ``repeats`` calls after ``warmup`` untimed ones, in milliseconds."""
    for _ in range(warmup):
        fn(x)
    elapsed = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter_ns()
        fn(x)
        elapsed[i] = time.perf_counter_ns() - start
    return elapsed / 1e6


def cpu_metadata(framework: str, threads: int) -> dict[str, str]:
    """The metadata every float32 eager CPU profile starts with (this machine, today)."""
    return {"device": f"cpu:{cpu_name()}", "dtype": "float32", "framework": framework,
            "date": datetime.date.today().isoformat(), "execution_mode": "eager", "hardware": "cpu",
            "threads": str(threads)}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def blas_name() -> str:
    """The BLAS numpy was built against, as numpy reports it (or 'unknown')."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas['version']}"
    except (TypeError, KeyError):
        return "unknown"


# A profiled stage: (name, run, trunk); a trunk stage's output is the next stage's input,
# a branch's (an early-exit ramp's) is not.
StageFn = tuple[str, Callable[[np.ndarray], np.ndarray], bool]


def mlp3(rng: np.random.Generator) -> tuple[list[StageFn], Callable[[int], np.ndarray], str]:
    """mlp3's stages, its inputs (random rows) and its description."""
    stages = [(name, make_block(widths, rng), True) for name, widths in MLP3.items()]
    describe = "mlp3: 3 blocks of dense+ReLU+dense+ReLU, widths " + " | ".join(
        f"{name} {a}>{b}>{c}" for name, (a, b, c) in MLP3.items())
    return stages, lambda batch: rng.standard_normal((batch, MLP3["block1"][0])).astype(np.float32), describe


def trained_mlp_ee(dataset: str, rng: np.random.Generator) -> tuple[list[StageFn], Callable[[int], np.ndarray], str]:
    """The early-exit MLP of :mod:`workloads.digits` trained on ``dataset``, fed its real
    held-out rows (imported here: mlp3 needs only numpy)."""
    from servesim.workloads import digits

    net, split, _ = digits.build(dataset=dataset)
    widths = ">".join(map(str, [net.backbone[0][0].shape[0], *(w.shape[1] for w, _ in net.backbone)]))
    describe = (f"{dataset}_ee: MLP {widths} trained on {dataset} (workloads/digits.py), float32; "
                f"block1-3 dense+ReLU, block4 dense+ReLU+dense+softmax; ramp1-3 dense "
                f"{net.ramps[0][0].shape[0]}>{net.ramps[0][0].shape[1]} (avg-pool/{digits.POOL} folded in)"
                f"+softmax on block1-3's output; table workloads/data/{dataset}_ee.npz")
    return list(net.stages()), lambda batch: split.test_x[:batch].astype(np.float32), describe


MODELS = {"mlp3": mlp3, **{f"{d}_ee": functools.partial(trained_mlp_ee, d) for d in ("digits", "mnist1d")}}
DEFAULT_OUT = {name: f"workloads/profiles/cpu_{name}.csv" for name in MODELS} | {"mlp3": "workloads/profiles/cpu_mlp.csv"}


def measure(repeats: int, warmup: int, threads: int, model: str = "mlp3") -> Profile:
    """Time every (stage, batch size) of ``model`` (a key of :data:`MODELS`) and return
    the checked profile.

    ``threads`` is only recorded: the BLAS thread count is fixed by the environment
    before numpy loads (see :func:`main`).
    """
    rng = np.random.default_rng(0)
    stages, inputs, describe = MODELS[model](rng)
    rows = []
    gc.disable()  # a collection inside a timed call would be noise, not model cost
    try:
        for batch in BATCH_SIZES:
            x = inputs(batch)
            for name, run, trunk in stages:
                ms = time_ms(run, x, warmup, repeats)
                p50, p90, p99 = (round(float(v), 4) for v in np.percentile(ms, [50, 90, 99]))
                rows.append(("cpu", model, name, batch, p50, p90, p99, repeats))
                if trunk:
                    x = run(x)  # the next stage sees this stage's real output
    finally:
        gc.enable()
    metadata = {
        **cpu_metadata(f"numpy {np.__version__}", threads),
        "blas": blas_name(),
        "model": describe,
        "timing": f"time.perf_counter_ns per call, {warmup} warm-up calls, percentiles over repeats",
        "python": platform.python_version(),
    }
    return Profile.from_rows(rows, metadata, source="profiler_cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp3", help="network to time")
    parser.add_argument("--out", help="CSV to write (default: workloads/profiles/cpu_mlp.csv for mlp3, "
                                      "workloads/profiles/cpu_<model>.csv for the others)")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per (stage, batch size)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls before timing")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads")
    args = parser.parse_args(argv)

    wanted = str(args.threads)
    if any(os.environ.get(var) != wanted for var in THREAD_VARS):
        env = {**os.environ, **{var: wanted for var in THREAD_VARS}}
        cmd = [sys.executable, "-m", "servesim.workloads.profiler_cpu", *(sys.argv[1:] if argv is None else argv)]
        return subprocess.run(cmd, env=env, check=False).returncode

    started = time.perf_counter()
    out = args.out or DEFAULT_OUT[args.model]
    profile = measure(args.repeats, args.warmup, args.threads, args.model)
    profile.save(out)
    print(f"wrote {out} ({len(profile.rows)} rows) in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
