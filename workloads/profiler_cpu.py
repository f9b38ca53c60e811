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

``--instances K`` also measures how K instances of the model contend for the CPU when
they share it (:mod:`workloads.contention`), into ``<out>.contention.csv``: at each batch
size, for k = 2..K, k threads (one instance each, as a Python server's instance threads
are) run the whole model on that batch back to back, started together; a call's time
under k is compared with its time alone, measured the same way just before (one
thread), as the ratio of the medians. Only calls that ended while all k were still
running count. numpy releases the GIL inside BLAS, and each BLAS call runs on one
thread (``--threads``), so the threads share the cores and the GIL as instances in one
server process would; the instances share the weight arrays (read-only).

``--contention-only`` measures that table alone and writes it beside the profile already
at ``--out``, whose rows are left as they are (the profile's own metadata gains a
``contention`` line saying when and how): the way to add a measured table to a shipped
profile without timing its stages again.

    python -m servesim.workloads.profiler_cpu --instances 2 --contention-only --out workloads/profiles/cpu_mlp.csv
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import math
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import replace
from typing import Callable

import numpy as np

from servesim.workloads.contention import contention_path, tables_from_rows
from servesim.workloads.profile import Profile, ProfileError, load_profile

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


def concurrent_ms(call: Callable[[], object], streams: int, repeats: int, warmup: int) -> np.ndarray:
    """Wall times (ms) of ``call()`` run back to back by ``streams`` threads started
    together, ``repeats`` calls each after ``warmup`` untimed ones; only the calls that
    ended before the first thread finished (so all ran beside ``streams - 1`` others)."""
    start = threading.Barrier(streams)
    lock = threading.Lock()
    first_done = [math.inf]
    spans: list[np.ndarray] = [np.empty((0, 2))] * streams

    def stream(i: int) -> None:
        for _ in range(warmup):
            call()
        start.wait()
        span = np.empty((repeats, 2))
        for r in range(repeats):
            began = time.perf_counter_ns()
            call()
            span[r] = began, time.perf_counter_ns()
        spans[i] = span
        with lock:
            first_done[0] = min(first_done[0], span[-1, 1])

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = np.concatenate(spans)
    kept = every[every[:, 1] <= first_done[0]]
    return (kept[:, 1] - kept[:, 0]) / 1e6


def slowdowns(call: Callable[[], object], most: int, repeats: int, warmup: int) -> list[float]:
    """How many times longer a call takes while k run at once, for k = 2..``most``: the
    median under k over the median of one stream alone, measured just before."""
    result = []
    for k in range(2, most + 1):
        alone = float(np.median(concurrent_ms(call, 1, repeats, warmup)))
        result.append(float(np.median(concurrent_ms(call, k, repeats, warmup))) / alone)
    return result


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


def forward(stages: list[StageFn], x: np.ndarray) -> None:
    """The whole model on ``x``: every stage, each branch on the trunk's output before it."""
    for _, run, trunk in stages:
        y = run(x)
        if trunk:
            x = y


def measure_contention(repeats: int, warmup: int, model: str, instances: int) -> list[dict]:
    """The contention rows of ``model`` for 2 to ``instances`` instances, at every batch
    size (see the module docstring); none for one instance."""
    stages, inputs, _ = MODELS[model](np.random.default_rng(0))
    rows = []
    gc.disable()  # a collection inside a timed call would be noise, not model cost
    try:
        for batch in BATCH_SIZES if instances > 1 else ():
            measured = slowdowns(functools.partial(forward, stages, inputs(batch)), instances, repeats, warmup)
            rows += [{"hardware": "cpu", "model": model, "instances": k, "batch_size": batch,
                      "slowdown": round(slowdown, 4), "repeats": repeats} for k, slowdown in enumerate(measured, 2)]
    finally:
        gc.enable()
    return rows


def contention_note(instances: int) -> str:
    """The profile metadata line saying how its contention table was measured."""
    counts = "2" if instances == 2 else f"2 to {instances}"
    return (f"{counts} threads each running the model back to back, median call time over one thread's "
            f"(workloads/profiler_cpu.py)")


def measure(repeats: int, warmup: int, threads: int, model: str = "mlp3", instances: int = 1) -> Profile:
    """Time every (stage, batch size) of ``model`` (a key of :data:`MODELS`) and return
    the checked profile; with ``instances`` > 1 also how that many instances contend
    (its contention table, see the module docstring).

    ``threads`` is only recorded: the BLAS thread count is fixed by the environment
    before numpy loads (see :func:`main`).
    """
    contention = measure_contention(repeats, warmup, model, instances)
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
    if contention:
        metadata["contention"] = contention_note(instances)
    return Profile.from_rows(rows, metadata, source="profiler_cpu", contention=contention)


def add_contention(path: str, repeats: int, warmup: int, threads: int, model: str, instances: int) -> Profile:
    """Measure ``model``'s contention table and write it beside the profile at ``path``,
    whose rows (and its other models' tables) are kept as they are; ``threads`` (BLAS
    threads, fixed before numpy loaded) is only recorded."""
    profile = load_profile(path)
    if ("cpu", model) not in {(row.hardware, row.model) for row in profile.rows}:
        raise ProfileError(f"{path}: no rows of model {model!r} on 'cpu'; --contention-only adds a table to a "
                           f"profile of that model (run without it to time the stages as well)")
    rows = measure_contention(repeats, warmup, model, instances)
    tables = tables_from_rows(rows, [f"{model} contention row {i}" for i in range(1, len(rows) + 1)],
                              f"{model} contention", ProfileError)
    note = (f"{contention_note(instances)}, measured after the rows: {datetime.date.today().isoformat()}, "
            f"cpu:{cpu_name()}, {threads} BLAS thread(s)")
    updated = replace(profile, metadata={**profile.metadata, "contention": note},
                      contention={**profile.contention, **tables})
    updated.save(path)
    return updated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp3", help="network to time")
    parser.add_argument("--out", help="CSV to write (default: workloads/profiles/cpu_mlp.csv for mlp3, "
                                      "workloads/profiles/cpu_<model>.csv for the others)")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per (stage, batch size)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls before timing")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads")
    parser.add_argument("--instances", type=int, default=1,
                        help="also measure how up to this many instances sharing the CPU slow each other down")
    parser.add_argument("--contention-only", action="store_true",
                        help="measure only the contention table (--instances >= 2), beside the profile at --out")
    args = parser.parse_args(argv)
    if args.instances < 1:
        parser.error(f"--instances must be >= 1, got {args.instances}")
    if args.contention_only and args.instances < 2:
        parser.error(f"--contention-only measures instances sharing the CPU: give --instances 2 or more, "
                     f"got {args.instances}")

    wanted = str(args.threads)
    if any(os.environ.get(var) != wanted for var in THREAD_VARS):
        env = {**os.environ, **{var: wanted for var in THREAD_VARS}}
        cmd = [sys.executable, "-m", "servesim.workloads.profiler_cpu", *(sys.argv[1:] if argv is None else argv)]
        return subprocess.run(cmd, env=env, check=False).returncode

    started = time.perf_counter()
    out = args.out or DEFAULT_OUT[args.model]
    if args.contention_only:
        try:
            add_contention(out, args.repeats, args.warmup, args.threads, args.model, args.instances)
        except ProfileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {contention_path(out)} in {time.perf_counter() - started:.1f} s")
        return 0
    profile = measure(args.repeats, args.warmup, args.threads, args.model, args.instances)
    profile.save(out)
    print(f"wrote {out} ({len(profile.rows)} rows) in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
