"""Measure a profile of a real PyTorch model with early-exit ramps (CPU or CUDA), eager.

The shipped numpy profiles (:mod:`workloads.profiler_cpu`) show the format; this one
times the networks of :mod:`workloads.torch_models` the same way: each backbone stage
on the real output of the stage before it, each ramp head on its block's output, in
the order ``block1, ramp1, block2, ...`` that servesim's ``exits.ramps`` reads.

Timing, per (stage, batch size) point, under ``torch.inference_mode()`` in eval mode:

* warm-up calls first (untimed: the first call at a new shape builds oneDNN / cuDNN
  kernels), then timed calls; the same input tensor serves every call of a point, so
  on the CPU a small batch's activations may stay in cache between calls (optimistic
  by a little at batch 1), and nothing is copied between calls;
* at least ``--repeats`` timed calls, unless ``--max-seconds-per-point`` runs out
  first (never fewer than ``--min-repeats``); the ``repeats`` column holds how many
  calls each point actually got;
* CPU: ``time.perf_counter_ns`` wall clock around each call, with
  ``torch.set_num_threads(--threads)`` (default 1, the most repeatable);
* CUDA: CUDA events around each call, synchronised after each call (as an eager
  early-exit server must, to read a ramp's confidence). The rows hold the events'
  device span; host enqueue time is measured apart and summarised in the metadata
  (``launch_bound``), since an eager GPU server is often limited by the host launching
  kernels rather than by the GPU (see shared/DESIGN.md).

    python -m workloads.profiler_torch --model resnet18_ee --device cpu --dtype fp32 \\
        --out workloads/profiles/cpu_resnet18_ee.csv
"""

from __future__ import annotations

import argparse
import datetime
import gc
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from workloads.profile import Profile
from workloads.profiler_cpu import BATCH_SIZES, cpu_name
from workloads.torch_models import MODELS, EEModel, build

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
LAUNCH_BOUND = 0.9  # host enqueue / device span above which the GPU waited on the host


@dataclass(frozen=True)
class Budget:
    """How many calls one point gets: ``calls``, unless ``seconds`` (if set) run out
    first, but never fewer than ``at_least``."""

    calls: int
    at_least: int
    seconds: float | None

    def more(self, done: int, elapsed: float) -> bool:
        if done >= self.calls:
            return False
        return done < self.at_least or self.seconds is None or elapsed < self.seconds


class CpuClock:
    """Wall clock around a call: on the CPU the call has finished when it returns."""

    method = "time.perf_counter_ns wall clock around each call"

    def __call__(self, fn: Callable, x: torch.Tensor) -> tuple[float, float, torch.Tensor]:
        start = time.perf_counter_ns()
        y = fn(x)
        ms = (time.perf_counter_ns() - start) / 1e6
        return ms, ms, y


class CudaClock:
    """CUDA events around a call (device span), then a synchronize; the host time to
    enqueue the call is kept apart."""

    method = ("CUDA events around each call, synchronised after each; rows hold the device span "
              "(including any gaps where the GPU waited for the host's launches)")

    def __init__(self) -> None:
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def __call__(self, fn: Callable, x: torch.Tensor) -> tuple[float, float, torch.Tensor]:
        host_start = time.perf_counter_ns()
        self.start.record()
        y = fn(x)
        self.end.record()
        host_ms = (time.perf_counter_ns() - host_start) / 1e6
        self.end.synchronize()
        return self.start.elapsed_time(self.end), host_ms, y


def run_calls(clock, fn: Callable, x: torch.Tensor, budget: Budget) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Call ``fn(x)`` as ``budget`` allows: (span ms, host ms) per call and the last output."""
    spans, hosts, y = [], [], None
    started = time.perf_counter()
    while budget.more(len(spans), time.perf_counter() - started):
        span, host, y = clock(fn, x)
        spans.append(span)
        hosts.append(host)
    return np.array(spans), np.array(hosts), y


@dataclass(frozen=True)
class Point:
    """One measured (stage, batch size): its timed calls' spans and host times (ms)."""

    stage: str
    batch: int
    spans: np.ndarray
    hosts: np.ndarray

    def row(self, hardware: str, model: str) -> tuple:
        p50, p90, p99 = (round(float(v), 4) for v in np.percentile(self.spans, [50, 90, 99]))
        return hardware, model, self.stage, self.batch, p50, p90, p99, len(self.spans)

    def host_ratio(self) -> float:
        return float(np.median(self.hosts) / np.median(self.spans))


def time_model(model: EEModel, device: torch.device, dtype: torch.dtype, batch_sizes: Sequence[int],
               warmup: Budget, timed: Budget, clock) -> list[Point]:
    """Every (stage, batch size) point, batch by batch, each stage on its real input."""
    for module in model.modules():
        module.to(device, dtype)
    points = []
    gc.disable()  # a collection inside a timed call would be noise, not model cost
    try:
        with torch.inference_mode():
            for batch in batch_sizes:
                x = model.make_input(batch).to(device=device, dtype=dtype if model.float_input else None)
                for name, module, trunk in model.stages():
                    run_calls(clock, module, x, warmup)
                    spans, hosts, y = run_calls(clock, module, x, timed)
                    points.append(Point(name, batch, spans, hosts))
                    if trunk:
                        x = y  # the next stage (and this block's ramp) sees this output
    finally:
        gc.enable()
    return points


def _launch_bound(points: Sequence[Point]) -> str:
    """One line on how host-bound eager CUDA execution was (shared/DESIGN.md)."""
    ratios = [p.host_ratio() for p in points]
    worst = points[int(np.argmax(ratios))]
    bound = sum(r >= LAUNCH_BOUND for r in ratios)
    return (f"{bound} of {len(points)} points had median host enqueue time >= {LAUNCH_BOUND:.0%} of the "
            f"device span (GPU waiting on kernel launches); highest ratio {max(ratios):.2f} at "
            f"{worst.stage} batch {worst.batch}")


def measure(model: EEModel, device: str = "cpu", dtype: str = "fp32", batch_sizes: Sequence[int] = BATCH_SIZES,
            repeats: int = 50, min_repeats: int = 10, max_seconds: float | None = None, warmup: int = 5,
            threads: int = 1) -> Profile:
    """Time every stage and ramp of ``model`` at each batch size; the checked profile.

    ``dtype`` is a key of :data:`DTYPES`; ``device`` is ``cpu`` or ``cuda[:N]``. Warm-up
    is ``warmup`` calls, cut short (after one) past a quarter of ``max_seconds``.
    """
    dev = torch.device(device)
    torch.set_num_threads(threads)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        clock, hardware = CudaClock(), torch.cuda.get_device_name(dev)
        device_name = f"cuda:{hardware}"
    elif dev.type == "cpu":
        clock, hardware, device_name = CpuClock(), "cpu", f"cpu:{cpu_name()}"
        if dtype == "fp16":
            warnings.warn("fp16 on the CPU: many kernels are unsupported or emulated and slow; "
                          "the profile will not resemble a GPU's", stacklevel=2)
    else:
        raise ValueError(f"device must be cpu or cuda[:N], got {device!r}")
    at_least = min(min_repeats, repeats)
    cap = "" if max_seconds is None else f", fewer once {max_seconds:g} s have passed but at least {at_least}"
    points = time_model(
        model, dev, DTYPES[dtype], batch_sizes,
        warmup=Budget(warmup, min(1, warmup), None if max_seconds is None else max_seconds / 4),
        timed=Budget(repeats, at_least, max_seconds), clock=clock)
    metadata = {
        "device": device_name,
        "dtype": str(DTYPES[dtype]).removeprefix("torch."),
        "framework": f"torch {'.'.join(torch.__version__.split('.')[:2])}",
        "date": datetime.date.today().isoformat(),
        "execution_mode": "eager",
        "hardware": hardware,
        "threads": str(torch.get_num_threads()),
        "model": model.description,
        "input": model.input_shape,
        "timing": (f"{clock.method}; torch.inference_mode, eval mode; warm-up: {warmup} untimed call(s) per "
                   f"point{' (fewer past a quarter of the cap)' if max_seconds is not None else ''}; every call "
                   f"of a point gets the same input tensor: the previous stage's real output (random "
                   f"{'images' if model.float_input else 'token ids'} for the first); percentiles over the "
                   f"timed calls"),
        "repeats": f"{repeats} timed calls per point{cap}; the repeats column holds the actual count",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if dev.type == "cuda":
        metadata["launch_bound"] = _launch_bound(points)
    rows = [point.row(hardware, model.name) for point in points]
    return Profile.from_rows(rows, metadata, source="profiler_torch")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _sizes(text: str) -> list[int]:
    return [_positive(s) for s in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    """The command line (also for ``servesim profile``): measure, write, say where."""
    parser = argparse.ArgumentParser(prog="python -m workloads.profiler_torch",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), required=True, help="network to time")
    parser.add_argument("--out", required=True, help="CSV to write")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="default fp32")
    parser.add_argument("--batch-sizes", type=_sizes, default=list(BATCH_SIZES),
                        help="comma-separated (default 1,2,4,8,16,32,64)")
    parser.add_argument("--repeats", type=_positive, default=50, help="timed calls per point (default 50)")
    parser.add_argument("--min-repeats", type=_positive, default=10,
                        help="timed calls per point even past --max-seconds-per-point (default 10)")
    parser.add_argument("--max-seconds-per-point", type=float,
                        help="stop timing a point after this long (once it has --min-repeats calls)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per point (default 5)")
    parser.add_argument("--threads", type=_positive, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--input-size", type=_positive,
                        help="image side (CNNs, default 224) or sequence length (bert_ee, default 128)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    profile = measure(build(args.model, args.input_size), args.device, args.dtype, args.batch_sizes,
                      args.repeats, args.min_repeats, args.max_seconds_per_point, args.warmup, args.threads)
    profile.save(args.out)
    print(f"wrote {args.out} ({len(profile.rows)} rows) in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
