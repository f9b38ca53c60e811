"""Measure a profile of a real PyTorch model with early-exit ramps (CPU or CUDA), eager.

The shipped numpy profiles (:mod:`workloads.profiler_cpu`) show the format; this one
times the networks of :mod:`workloads.torch_models` the same way: each backbone stage
on the real output of the stage before it, each ramp head on its block's output, in
the order ``block1, ramp1, block2, ...`` that servesim's ``exits.ramps`` reads.

It also times the whole backbone in one call (no ramps) at each batch size, as the
rows of a second model ``<model>_e2e`` with the one stage ``forward`` (``--no-e2e``
skips it): a server without exits makes that one call, and setting it against the sum
of the stage medians shows what cutting the model costs, which the simulator, adding
stages, takes to be nothing: each stage's own call overhead (and, on a GPU, its
synchronisation), and weights that stay in cache while one stage is called over and
over but compete for it in one forward pass.

Timing, per (stage, batch size) point, under ``torch.inference_mode()`` in eval mode:

* warm-up calls first (untimed: the first call at a new shape builds oneDNN / cuDNN
  kernels), then timed calls; the calls take their input in turn from a ring of
  distinct copies of it (up to one per call, :data:`FRESH_BYTES` in all, made before
  the point's first call), so a call does not read an input the call before it just
  pulled into cache, and nothing is copied while timing;
* at least ``--repeats`` timed calls, unless ``--max-seconds-per-point`` runs out
  first (never fewer than ``--min-repeats``); the ``repeats`` column holds how many
  calls each point actually got;
* CPU: ``time.perf_counter_ns`` wall clock around each call, with
  ``torch.set_num_threads(--threads)`` (default 1, the most repeatable);
* CUDA: CUDA events around each call, synchronised after each call (as an eager
  early-exit server must, to read a ramp's confidence). The rows hold the events'
  device span; host enqueue time is measured apart and summarised in the metadata
  (``launch_bound``), since an eager GPU server is often limited by the host launching
  kernels rather than by the GPU (see shared/DESIGN.md). ``--dtype`` converts weights
  and float inputs; the ``cuda`` metadata line says whether fp32 ran as TF32.

A plain variant of :mod:`workloads.torch_models` is one block, ``forward``: its rows
are already the whole model, so it gets no ``_e2e`` rows.

Every timed call's span is also kept, to 0.1 us, in the profile's raw-samples sidecar
(``X.csv`` -> ``X.samples.npz``, see :mod:`workloads.profile`): the ``measured`` noise
draws from it, rare stalls included, which three percentiles cannot carry.

``--hardware NAME`` names the rows' hardware (default ``cpu``, or the GPU's name). CPU
core counts are named by :func:`workloads.variants.cpu_hardware` (``cpu-2c``), and
such a name must match ``--threads``; with ``--append`` a run adds its rows to an
existing file, so one file holds a model at several core counts (or several models).

``--load-time`` also measures cold starts, as rows of model ``<model>_load``, stage
``load``, batch 1 (:func:`time_load`): the time from constructing the model to its
first answer, the cost a scaling policy pays to start a replica or switch variants.

Execution is eager (``execution_mode: eager`` in the metadata); :func:`measure` takes
the mode as a parameter so that a CUDA-graph mode (each point's call captured once and
replayed) can be added where the calls are made, in :func:`time_point`.

    python -m servesim.workloads.profiler_torch --model resnet18_ee --device cpu --dtype fp32 \\
        --out workloads/profiles/cpu_resnet18_ee.csv
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import itertools
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from servesim.workloads.profile import Profile, load_profile
from servesim.workloads.profiler_cpu import BATCH_SIZES, cpu_name
from servesim.workloads.torch_models import MODELS, EEModel, build
from servesim.workloads.variants import cpu_cores, cpu_hardware

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
LAUNCH_BOUND = 0.9  # host enqueue / device span above which the GPU waited on the host
# Input copies per point, in all: several times a GPU's L2 (50 MB on an H100/H200) or a
# server CPU's last-level cache, so a copy has left the cache by the time it comes round.
FRESH_BYTES = 256 * 2**20
EXECUTION_MODES = ("eager",)
MIN_LOAD_REPEATS = 5  # cold starts per load row: fewer make its p90 and p99 meaningless
# Metadata that rows sharing a file must agree on: one machine, precision and framework.
SHARED_METADATA = ("device", "dtype", "framework", "execution_mode")


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


def fresh_inputs(x: torch.Tensor, calls: int, budget_bytes: int = FRESH_BYTES) -> list[torch.Tensor]:
    """``x`` and copies of it, one per call at most, up to ``budget_bytes`` in all (at
    least ``x`` itself): the ring a point's calls take their inputs from."""
    copies = min(calls, max(1, math.ceil(budget_bytes / max(1, x.nbytes))))
    return [x] + [x.clone() for _ in range(copies - 1)]


def run_calls(clock, fn: Callable, inputs: Iterator[torch.Tensor],
              budget: Budget) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Call ``fn`` on the next of ``inputs`` as ``budget`` allows: (span ms, host ms) per
    call and the last output."""
    spans, hosts, y = [], [], None
    started = time.perf_counter()
    while budget.more(len(spans), time.perf_counter() - started):
        span, host, y = clock(fn, next(inputs))
        spans.append(span)
        hosts.append(host)
    return np.array(spans), np.array(hosts), y


@dataclass(frozen=True)
class Point:
    """One measured (model, stage, batch size): its timed calls' spans and host times (ms)."""

    model: str
    stage: str
    batch: int
    spans: np.ndarray
    hosts: np.ndarray

    def samples(self) -> np.ndarray:
        """The spans (ms) as the profile keeps them: to 0.1 us, what the clocks resolve."""
        return np.round(self.spans, 4)

    def row(self, hardware: str) -> tuple:
        p50, p90, p99 = (round(float(v), 4) for v in np.percentile(self.samples(), [50, 90, 99]))
        return hardware, self.model, self.stage, self.batch, p50, p90, p99, len(self.spans)

    def host_ratio(self) -> float:
        return float(np.median(self.hosts) / np.median(self.spans))


def time_point(clock, module: Callable, x: torch.Tensor, warmup: Budget, timed: Budget,
               model: str, stage: str) -> tuple[Point, torch.Tensor]:
    """Warm up, then time ``module`` on copies of ``x`` (:func:`fresh_inputs`); the point
    and the last output, which the next stage takes as its input."""
    inputs = itertools.cycle(fresh_inputs(x, warmup.calls + timed.calls))
    run_calls(clock, module, inputs, warmup)
    spans, hosts, y = run_calls(clock, module, inputs, timed)
    return Point(model, stage, len(x), spans, hosts), y


def time_model(model: EEModel, device: torch.device, dtype: torch.dtype, batch_sizes: Sequence[int],
               warmup: Budget, timed: Budget, clock, e2e: bool = True) -> list[Point]:
    """Every (stage, batch size) point, batch by batch, each stage on its real input; with
    ``e2e`` also the whole backbone (``<model>_e2e``, stage ``forward``) per batch size."""
    for module in model.modules():
        module.to(device, dtype)
    points = []
    gc.disable()  # a collection inside a timed call would be noise, not model cost
    try:
        with torch.inference_mode():
            for batch in batch_sizes:
                first = model.make_input(batch).to(device=device, dtype=dtype if model.float_input else None)
                x = first
                for name, module, trunk in model.stages():
                    point, y = time_point(clock, module, x, warmup, timed, model.name, name)
                    points.append(point)
                    if trunk:
                        x = y  # the next stage (and this block's ramp) sees this output
                if e2e:
                    point, _ = time_point(clock, model.backbone(), first, warmup, timed,
                                          f"{model.name}_e2e", "forward")
                    points.append(point)
    finally:
        gc.enable()
    return points


def _weights(model: EEModel) -> nn.Module:
    """Every stage and ramp of ``model`` as one module: the state dict a server loads."""
    return nn.ModuleList(model.modules())


def time_load(construct: Callable[[], EEModel], device: torch.device, dtype: torch.dtype,
              repeats: int) -> Point:
    """``repeats`` cold starts of the model ``construct`` builds, each timed whole with a
    wall clock: construct it (its random initialisation included, as a server's
    constructor runs it), ``torch.load`` its state dict, ``load_state_dict`` on
    ``device`` in ``dtype``, and one forward at batch 1 (the warm-up call a server makes
    before it takes requests). The state dict is saved once, before the first, to a
    temporary file, so it is read from the page cache: a warm disk. A point of model
    ``<model>_load``, stage ``load``."""
    reference = construct()
    name = f"{reference.name}_load"
    spans = []
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "state_dict.pt")
        torch.save(_weights(reference).to(dtype).state_dict(), path)
        del reference
        for _ in range(repeats):
            gc.collect()
            gc.disable()  # as for the other points: a collection would be noise
            try:
                start = time.perf_counter_ns()
                model = construct()
                _weights(model).to(device, dtype).load_state_dict(
                    torch.load(path, map_location=device, weights_only=True))
                with torch.inference_mode():
                    x = model.make_input(1).to(device=device, dtype=dtype if model.float_input else None)
                    model.backbone()(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                spans.append((time.perf_counter_ns() - start) / 1e6)
                del model  # before the next one is built: one model in memory at a time
            finally:
                gc.enable()
    return Point(name, "load", 1, np.array(spans), np.array(spans))


def hardware_name(hardware: str | None, device: torch.device, threads: int) -> str:
    """The rows' hardware: ``hardware`` if given, else ``cpu`` or the GPU's name. A core
    count name (:func:`workloads.variants.cpu_hardware`) must be on the CPU and match
    ``threads``: the threads are the cores the profile used."""
    if hardware is None:
        return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if not hardware or hardware != hardware.strip() or not hardware.isprintable():
        raise ValueError(f"hardware must be a non-empty printable name without surrounding spaces, got {hardware!r}")
    cores = cpu_cores(hardware)
    if cores is not None and device.type != "cpu":
        raise ValueError(f"hardware {hardware!r} names CPU cores, but the device is {device}")
    if cores is not None and cores != threads:
        raise ValueError(f"hardware {hardware!r} names {cores} core(s), but threads is {threads}; "
                         f"name it {cpu_hardware(threads)!r} or run {cores} thread(s)")
    return hardware


def _launch_bound(points: Sequence[Point]) -> str:
    """One line on how host-bound eager CUDA execution was (shared/DESIGN.md)."""
    ratios = [p.host_ratio() for p in points]
    worst = points[int(np.argmax(ratios))]
    bound = sum(r >= LAUNCH_BOUND for r in ratios)
    return (f"{bound} of {len(points)} points had median host enqueue time >= {LAUNCH_BOUND:.0%} of the "
            f"device span (GPU waiting on kernel launches); highest ratio {max(ratios):.2f} at "
            f"{worst.stage} batch {worst.batch}")


def resolve_device(device: str) -> torch.device:
    """``cpu`` or an available ``cuda[:N]`` as a torch device; otherwise a one-line
    ValueError, before any model is built or timed."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda[:N], got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA device available to torch {torch.__version__}")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return dev


def cuda_math() -> str:
    """What "fp32" meant on the GPU: whether matmuls and cuDNN convolutions ran as TF32
    (PyTorch's defaults: matmuls not, convolutions yes), and cuDNN's algorithm search."""
    on = {True: "on", False: "off"}
    return (f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; TF32 for fp32 matmul "
            f"{on[torch.backends.cuda.matmul.allow_tf32]}, for fp32 cuDNN convolutions "
            f"{on[torch.backends.cudnn.allow_tf32]}; cudnn.benchmark {on[torch.backends.cudnn.benchmark]}")


def measure(model: EEModel, device: str = "cpu", dtype: str = "fp32", batch_sizes: Sequence[int] = BATCH_SIZES,
            repeats: int = 50, min_repeats: int = 10, max_seconds: float | None = None, warmup: int = 5,
            threads: int = 1, e2e: bool = True, execution_mode: str = "eager", hardware: str | None = None,
            cold_start: Callable[[], EEModel] | None = None, load_repeats: int = MIN_LOAD_REPEATS) -> Profile:
    """Time every stage and ramp of ``model`` at each batch size (and, with ``e2e``, the
    whole backbone as ``<model>_e2e``, unless the model is one block); the checked profile.

    ``dtype`` is a key of :data:`DTYPES`; ``device`` is ``cpu`` or ``cuda[:N]``;
    ``execution_mode`` one of :data:`EXECUTION_MODES` (only ``eager`` so far). Warm-up is
    ``warmup`` calls, cut short (after one) past a quarter of ``max_seconds``.
    ``hardware`` names the rows' hardware (:func:`hardware_name`). ``cold_start``, a
    function building a fresh ``model``, adds ``load_repeats`` (at least
    :data:`MIN_LOAD_REPEATS`) cold starts as ``<model>_load`` (:func:`time_load`).
    """
    if execution_mode not in EXECUTION_MODES:
        raise ValueError(f"execution mode {execution_mode!r} is not implemented; "
                         f"choose from {', '.join(EXECUTION_MODES)}")
    if cold_start is not None and load_repeats < MIN_LOAD_REPEATS:
        raise ValueError(f"load_repeats must be at least {MIN_LOAD_REPEATS}, got {load_repeats}")
    dev = resolve_device(device)
    hardware = hardware_name(hardware, dev, threads)
    e2e = e2e and len(model.blocks) > 1  # one block: its rows are already the whole model
    torch.set_num_threads(threads)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        clock, device_name = CudaClock(), f"cuda:{torch.cuda.get_device_name(dev)}"
    else:
        clock, device_name = CpuClock(), f"cpu:{cpu_name()}"
        if dtype == "fp16":
            warnings.warn("fp16 on the CPU: many kernels are unsupported or emulated and slow; "
                          "the profile will not resemble a GPU's", stacklevel=2)
    at_least = min(min_repeats, repeats)
    cap = "" if max_seconds is None else f", fewer once {max_seconds:g} s have passed but at least {at_least}"
    points = time_model(
        model, dev, DTYPES[dtype], batch_sizes,
        warmup=Budget(warmup, min(1, warmup), None if max_seconds is None else max_seconds / 4),
        timed=Budget(repeats, at_least, max_seconds), clock=clock, e2e=e2e)
    metadata = {
        "device": device_name,
        "dtype": str(DTYPES[dtype]).removeprefix("torch."),
        "framework": f"torch {'.'.join(torch.__version__.split('.')[:2])}",
        "date": datetime.date.today().isoformat(),
        "execution_mode": execution_mode,
        "hardware": hardware,
        "threads": str(torch.get_num_threads()),
        "model": model.description,
        "input": model.input_shape,
        "timing": (f"{clock.method}; torch.inference_mode, eval mode; warm-up: {warmup} untimed call(s) per "
                   f"point{' (fewer past a quarter of the cap)' if max_seconds is not None else ''}; a point's "
                   f"input is the previous stage's real output (random "
                   f"{'images' if model.float_input else 'token ids'} for the first stage and forward), its "
                   f"calls take it in turn from a ring of distinct copies (at most one per call, "
                   f"{FRESH_BYTES >> 20} MiB in all) made before the first; percentiles over the timed calls"),
        "repeats": f"{repeats} timed calls per point{cap}; the repeats column holds the actual count",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if e2e:
        metadata["e2e"] = (f"model {model.name}_e2e, stage forward: the backbone's blocks in one call, no "
                           f"ramps, timed like a stage; set against the sum of the blocks' medians")
    loads = []  # apart from `points`: a cold start's wall clock says nothing of kernel launches
    if cold_start is not None:
        mebibytes = sum(t.numel() * t.element_size() for t in _weights(model).state_dict().values()) / 2**20
        loads.append(time_load(cold_start, dev, DTYPES[dtype], load_repeats))
        metadata["load"] = (f"model {model.name}_load, stage load, batch 1: {load_repeats} cold starts, each timed "
                            f"whole with time.perf_counter_ns: construct the model (random init), torch.load its "
                            f"state dict ({mebibytes:.1f} MiB, saved once beforehand to a temporary file, so read "
                            f"from the page cache), load_state_dict on the device, one forward at batch 1; "
                            f"starting the process and importing torch are not included")
    if dev.type == "cuda":
        metadata["cuda"] = cuda_math()
        metadata["launch_bound"] = _launch_bound(points)
    # The model's own rows first (in timing order), then its _e2e rows, then its _load row.
    measured = sorted(points, key=lambda p: p.model != model.name) + loads
    return Profile.from_rows([p.row(hardware) for p in measured], metadata, source="profiler_torch",
                             samples={(hardware, p.model, p.stage, p.batch): p.samples() for p in measured})


def append(path: str | os.PathLike, profile: Profile) -> Profile:
    """The profile at ``path`` with ``profile``'s rows after its own, so runs on several
    hardware names (core counts) or models share one file. :data:`SHARED_METADATA` must
    agree; any other key keeps each distinct value, in run order, joined by `` | ``."""
    old = load_profile(path)
    for key in SHARED_METADATA:
        if old.metadata[key] != profile.metadata[key]:
            raise ValueError(f"cannot append to {path}: its {key} is {old.metadata[key]!r}, this run's is "
                             f"{profile.metadata[key]!r}")
    metadata = dict(old.metadata)
    for key, value in profile.metadata.items():
        values = metadata[key].split(" | ") if key in metadata else []
        if value not in values:
            metadata[key] = " | ".join([*values, value])
    return Profile.from_rows(old.rows + profile.rows, metadata, source=f"{path} + this run",
                             samples={**old.samples, **profile.samples})


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _sizes(text: str) -> list[int]:
    return [_positive(s) for s in text.split(",")]


def _load_repeats(text: str) -> int:
    value = _positive(text)
    if value < MIN_LOAD_REPEATS:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_LOAD_REPEATS}, got {text!r}")
    return value


def main(argv: list[str] | None = None, prog: str = "python -m servesim.workloads.profiler_torch") -> int:
    """The command line (also ``servesim profile``, which passes its own ``prog``):
    measure, write, say where. A bad model or device name is one error line, status 2."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help=f"network to time: {', '.join(sorted(MODELS))}")
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
                        help="image side (ResNets 224, YOLOv5 320) or sequence length (BERT 128, the NLP "
                             "variants 32) instead of the model's default")
    parser.add_argument("--no-e2e", dest="e2e", action="store_false",
                        help="skip timing the whole backbone in one call (the <model>_e2e rows)")
    parser.add_argument("--hardware", help="the rows' hardware name (default cpu, or the GPU's name); "
                                           "cpu-<N>c names N cores and must match --threads")
    parser.add_argument("--append", action="store_true",
                        help="add the rows to --out if it exists (same device, dtype, framework, mode)")
    parser.add_argument("--load-time", action="store_true",
                        help="also time cold starts: rows of model <model>_load, stage load, batch 1")
    parser.add_argument("--load-repeats", type=_load_repeats, default=MIN_LOAD_REPEATS,
                        help=f"cold starts timed with --load-time (default and minimum {MIN_LOAD_REPEATS})")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    try:
        hardware = hardware_name(args.hardware, resolve_device(args.device), args.threads)
        model = build(args.model, args.input_size)
        if args.append and os.path.exists(args.out) and hardware in load_profile(args.out).hardware(model.name):
            raise ValueError(f"{args.out} already has model {model.name!r} on hardware {hardware!r}")
    except ValueError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    cold_start = functools.partial(build, args.model, args.input_size) if args.load_time else None
    profile = measure(model, args.device, args.dtype, args.batch_sizes, args.repeats, args.min_repeats,
                      args.max_seconds_per_point, args.warmup, args.threads, args.e2e, hardware=args.hardware,
                      cold_start=cold_start, load_repeats=args.load_repeats)
    if args.append and os.path.exists(args.out):
        profile = append(args.out, profile)
    profile.save(args.out)
    print(f"wrote {args.out} ({len(profile.rows)} rows) in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
