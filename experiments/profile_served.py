"""``servesim profile-served``: a profile of a real model measured *as the executor serves it*.

A kernel profile (``servesim profile``) times each stage alone, called over and over
from warm caches. The real executor (:mod:`sim.real`) calls the stages one after the
other with the host's own work between them — reading each ramp's probabilities,
asking the exit policy, recording answers — and on a small model that host work and
what it does to the caches are a large part of a batch's time. This profile measures
both, with :func:`sim.real.measure_served`, per batch size:

* the model's own rows (``<model>``: its stages and ramp heads, each call's span as
  served), the same stage names as its kernel profile;
* the host rows (``<model>_host``, stages ``batch``, ``exit``, ``leave`` and ``final``,
  see :func:`sim.real.measure_served`), which an experiment names in ``exits.host`` for
  the simulator to charge per batch and after each exit's decision, and ``total``, the
  whole time of never-exiting batches, whose spread ``model.noise: {kind: per_batch}``
  gives each simulated batch; for a model that takes its requests in
  (``digits_torch_ee_json``), ``intake``, one request's, which ``serving.host.intake``
  charges on the serving host (:mod:`sim.host`).

Any early-exit network of :mod:`workloads.torch_models` (ResNet, VGG, BERT builders,
random weights) can be served too, on the CPU or a GPU (``--device``, ``--dtype``,
``--input-size``): exits are decided at random, so what is measured is what each exit costs
where the executor spends it — on a GPU the ``head`` rows hold the device
synchronisation and the copy that reading a ramp needs, and the ``leave`` rows the
gather of the rows that go on — whatever the network's accuracy.

    servesim profile-served --model digits_torch_ee \\
        --out workloads/profiles/cpu_digits_torch_ee_served.csv
    servesim profile-served --model resnet18_ee --input-size 64 --batch-sizes 1,2,4,8 --repeats 20 \\
        --out runs/served/cpu_resnet18_ee_served.csv

``--whole`` times instead a model as a closed loop's real instances serve it
(:mod:`sim.real_clients`, ``servesim fidelity`` with ``load:``): the whole model in one
call per batch (model ``<name>``, stage ``batch``: the queue's lock, the batching
decision, the model, the answers handed back), back to back on one thread; with
``--instances K``, the same calls on 2..K threads at once, as the contention table
(``<out>.contention.csv``, :mod:`workloads.contention`: the median call under k over
the median alone, measured just before); and the clients' own time per request, one
client alone against one instance of the model, its batches left out (a client that slept
through a real batch wakes later than one that did not): every measured request in
``<out>.clients.csv`` (:mod:`workloads.client_samples`, for the experiment's
``load.client: {samples: PATH}``), their means printed and in the metadata as ``client``
(for ``load.client: {send_ms, network_ms, recv_ms}``):

    servesim profile-served --model resnet18_32 --whole --instances 2 \\
        --out workloads/profiles/cpu_resnet18_32_whole.csv
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch  # the `real` extra: servesim imports this module only when asked to profile

from servesim.sim.real import RUN, measure_served, paused_gc
from servesim.sim.closed_loop import ClientCosts, ClientSamples
from servesim.sim.real_clients import batch_call, measure_client_overhead
from servesim.workloads.client_samples import clients_path, write_client_samples
from servesim.workloads.exits import ALL_LEFT, HOST_STAGES, INTAKE, TOTAL, TURNAROUND
from servesim.workloads.profile import Profile
from servesim.workloads.profiler_cpu import concurrent_ms, cpu_metadata, cpu_name
from servesim.workloads.profiler_torch import DTYPES, cuda_math, hardware_name
from servesim.workloads.torch_models import MODELS

from .real_models import REAL_MODELS, WHOLE_MODELS, RealModel, served_network, warm_up

BATCH_SIZES = (1, 2, 3, 4, 5, 6, 7, 8)
TIMING = ('served: sim.real.measure_served: bursts of b simultaneous requests, each its own batch, replayed by '
          'the real executor (host wall clock: on a GPU a stage is its launch, a head its launch, synchronisation '
          'and copy to the host), once never exiting and once with each request leaving at each ramp with '
          'probability 1/3 (all together with probability 0.15); each stage and head call timed on the '
          "executor's clock where it is made; host rows are the gaps: batch = arrival to first stage, exit = a "
          "ramp head's return to the next stage when nobody left, leave = the same when some left, final = the "
          "last stage's end to the batch's last answer, all_left = the same after a ramp where everyone left; "
          "intake (a model that parses request bodies) = one request's intake, at batch size 1, wherever it fell (on an "
          "idle server or between a batch's calls), left out of the gaps; "
          'turnaround = on a busy server (every other never-exiting burst arrives halfway through the batch '
          "before it), the previous batch's last answer to this one's first stage; total = a never-exiting "
          "batch's arrival to its last answer")


def host_model(model: str) -> str:
    """The profile model that holds the host rows of ``model``."""
    return f"{model}_host"


def profile_served(name: str, batch_sizes=BATCH_SIZES, repeats: int = 100, warmup: int = 10,
                   threads: int = 1, seed: int = 0, device: str = "cpu", dtype: str = "fp32",
                   size: int | None = None) -> Profile:
    """Measure the served profile of ``name``: a trained real model (a key of REAL_MODELS,
    on the CPU, on every row of its inputs) or any early-exit network of
    workloads.torch_models (:func:`served_network`, on ``device`` in ``dtype``, inputs of
    ``size``); p50/p90/p99 over ``repeats`` batches per size."""
    if name in REAL_MODELS:
        if (device, dtype, size) != ("cpu", "fp32", None):
            raise ValueError(f"{name} is served as trained: on the CPU, in fp32, at its own input size")
        real = REAL_MODELS[name](None, threads)
    else:
        real = served_network(name, device, dtype, size, threads)
    rows = np.arange(real.rows)
    warm_up(real.staged, rows, max(batch_sizes))
    measured = measure_served(real.staged, rows, batch_sizes, repeats=repeats, warmup=warmup, seed=seed)
    return served_profile(real, measured, f"{repeats} timed rounds of {RUN} bursts per size after {warmup} "
                                          f"untimed, per replay; rows drawn with seed {seed}", device, dtype)


def served_profile(real: RealModel, measured: dict, repeats: str, device: str = "cpu",
                   dtype: str = "fp32") -> Profile:
    """The profile of ``measured`` (what :func:`sim.real.measure_served` returns, or
    several of them pooled by :func:`pool`) for ``real``, served on ``device`` in
    ``dtype``; ``repeats`` says how it was measured, for the metadata."""
    dev = torch.device(device)
    hardware = hardware_name(None, dev, torch.get_num_threads())
    names = {"stage": real.stages, "head": real.heads}
    table, samples = [], {}
    for (what, i, b), seconds in measured.items():
        model, stage = (real.name, names[what][i]) if what in names else (host_model(real.name), what)
        ms = np.round(np.asarray(seconds, dtype=np.float64) * 1e3, 4)  # 0.1 us: what the clock resolves, compressible
        p50, p90, p99 = (round(float(v), 4) for v in np.percentile(ms, [50, 90, 99]))
        table.append((hardware, model, stage, b, p50, p90, p99, len(ms)))
        samples[(hardware, model, stage, int(b))] = ms
    model_order = (s for pair in zip(real.stages, (*real.heads, None)) for s in pair if s)
    order = [*model_order, *HOST_STAGES, ALL_LEFT, TURNAROUND, INTAKE, TOTAL]
    table.sort(key=lambda r: (r[3], r[1] != real.name, order.index(r[2])))
    metadata = {
        **cpu_metadata(f"torch {'.'.join(torch.__version__.split('.')[:2])}", torch.get_num_threads()),
        "dtype": str(DTYPES[dtype]).removeprefix("torch."),
        "hardware": hardware,
        "model": f"{real.name} as served by sim.real.execute; {host_model(real.name)}: the serving host's own time",
        "timing": TIMING,
        "repeats": f"{repeats}; the repeats column holds the calls each point got",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if dev.type == "cuda":
        metadata["device"] = f"cuda:{hardware}"
        metadata["cuda"] = cuda_math()
    return Profile.from_rows(table, metadata, source="profile_served", samples=samples)


WHOLE_STAGE = "batch"  # a whole-model profile's one stage


def profile_whole(real: RealModel, name: str, batch_sizes=BATCH_SIZES, instances: int = 1, repeats: int = 50,
                  warmup: int = 5) -> tuple[Profile, ClientSamples]:
    """The whole-model profile of ``real`` (as model ``name``) as a closed loop's real
    instances serve it (see the module docstring), with the contention of 2..``instances``
    instances, and the clients' own costs, one row per measured request; ``repeats``
    timed calls per size and count after ``warmup`` untimed. All measured in isolation:
    no client, no other batch but the k being compared."""
    warm_up(real.staged, np.arange(real.rows), max(batch_sizes))
    rows, samples, contention = [], {}, []
    with paused_gc():  # as the real loop serves: a collection mid-batch is no cost of the model
        for b in batch_sizes:
            call = batch_call(real.staged, b, real.rows)
            alone = concurrent_ms(call, 1, repeats, warmup)
            ms = np.round(alone, 4)
            p50, p90, p99 = (round(float(v), 4) for v in np.percentile(ms, [50, 90, 99]))
            rows.append(("cpu", name, WHOLE_STAGE, b, p50, p90, p99, len(ms)))
            samples[("cpu", name, WHOLE_STAGE, b)] = ms
            for k in range(2, instances + 1):
                together = concurrent_ms(call, k, repeats, warmup)
                contention.append({"hardware": "cpu", "model": name, "instances": k, "batch_size": b,
                                   "slowdown": round(float(np.median(together) / np.median(alone)), 4),
                                   "repeats": len(together)})
    clients = measure_client_overhead(max(200, 20 * repeats), real.staged, real.rows)
    metadata = {
        **cpu_metadata(f"torch {'.'.join(torch.__version__.split('.')[:2])}", torch.get_num_threads()),
        "model": f"{name}: the whole model as sim.real_clients' instances serve it (every stage, the last exit's "
                 f"head; no ramps), {real.rows} input rows",
        "timing": f"served whole: sim.real_clients.batch_call back to back on one thread ({repeats} timed after "
                  f"{warmup} untimed per size): the queue's lock, the batching decision, the model, the answers",
        "client": f"{client_costs(clients.mean())} (means of {len(clients)} requests of one client alone against "
                  f"one instance of the model, its batch left out: network_ms is the handoff to the idle instance's "
                  f"thread; each request in the .clients.csv beside a saved profile)",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if contention:
        metadata["contention"] = (f"2 to {instances} threads each running batch_call back to back, started together; "
                                  f"median call over the median of one thread's, measured just before")
    return Profile.from_rows(rows, metadata, source="profile_served --whole", samples=samples,
                             contention=contention), clients


def client_costs(costs: ClientCosts) -> str:
    """``costs`` as the YAML of a load's ``client:`` costs (ms, 4 decimals: 0.1 us)."""
    return ", ".join(f"{key}: {seconds * 1e3:.4f}" for key, seconds in
                     (("send_ms", costs.send_s), ("network_ms", costs.network_s), ("recv_ms", costs.recv_s)))


def save_clients(clients: ClientSamples, profile_file: Path, how: str) -> Path:
    """Write ``clients`` (:func:`measure_client_overhead`'s rows) beside the profile at
    ``profile_file`` (``X.clients.csv``), with how (``how``), when and on what they were
    measured; returns the file's path."""
    path = clients_path(profile_file)
    write_client_samples(path, {"send_ms": clients.send_s * 1e3, "network_ms": clients.network_s * 1e3,
                                "recv_ms": clients.recv_s * 1e3}, {
        "measured": f"{clients.source}, on time.perf_counter (sim.real_clients): send = the "
                    f"client begins -> its request is queued, network = queued -> the idle instance's thread took "
                    f"it (the handoff), recv = the answer handed back -> the client holds it",
        "how": how,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "load_average": " ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1, 5, 15 min, as measuring ended)",
        "device": f"cpu:{cpu_name()} ({platform.machine()}, {platform.system()})",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "profile": Path(profile_file).name,
        "means": client_costs(clients.mean()),
    })
    return path


def pool(*measured: dict) -> dict:
    """Several :func:`sim.real.measure_served` results as one: each point's samples together."""
    keys = {key for m in measured for key in m}
    return {key: np.concatenate([m[key] for m in measured if key in m]) for key in keys}


def main(argv: list[str] | None = None, prog: str = "servesim profile-served") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=(
        "Profile a real model as the real executor serves it, host time included: its stages and ramp heads as "
        "served, and a <model>_host model with the host's own time before a batch, between calls, after exits and "
        "after the last stage, into a profile CSV (docs/PROFILES.md). Name that host model in an experiment's "
        "exits.host."))
    networks = sorted(n for n in MODELS if n.endswith("_ee") and n not in REAL_MODELS)
    parser.add_argument("--model", required=True, help=f"a trained real model ({', '.join(sorted(REAL_MODELS))}) "
                                                       f"or an early-exit network, random weights ({', '.join(networks)})")
    parser.add_argument("--out", required=True, help="CSV to write (and its raw samples, <name>.samples.npz)")
    parser.add_argument("--batch-sizes", type=lambda t: [int(s) for s in t.split(",")], default=list(BATCH_SIZES),
                        help=f"comma-separated (default {','.join(map(str, BATCH_SIZES))})")
    parser.add_argument("--repeats", type=int, default=100, help="timed rounds per replay (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds per replay (default 10)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (networks only; default cpu)")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="networks only (default fp32)")
    parser.add_argument("--input-size", type=int, default=None,
                        help="input size: image side or sequence length (networks only; default the model's)")
    parser.add_argument("--whole", action="store_true",
                        help=f"time the whole model as a closed loop's real instances serve it "
                             f"({', '.join(sorted(WHOLE_MODELS))}), and the clients' overhead")
    parser.add_argument("--instances", type=int, default=1,
                        help="with --whole: also measure how 2..K instances sharing the CPU slow each other down "
                             "(<out>.contention.csv)")
    args = parser.parse_args(argv)
    if min(args.batch_sizes) < 1 or args.repeats < 1 or args.warmup < 0 or args.threads < 1 \
            or (args.input_size is not None and args.input_size < 1) or args.instances < 1:
        parser.error("batch sizes, --repeats, --threads, --instances and --input-size must be positive, --warmup >= 0")
    if args.instances > 1 and not args.whole:
        parser.error(f"--instances {args.instances}: contention is measured for whole models (--whole)")
    started = time.perf_counter()
    if args.whole:
        return _whole(args, parser.prog, started)
    try:
        if args.model not in REAL_MODELS and args.model not in networks:
            raise ValueError(f"unknown model {args.model!r}; choose from {', '.join(sorted(REAL_MODELS) + networks)}")
        profile = profile_served(args.model, args.batch_sizes, args.repeats, args.warmup, args.threads,
                                 device=args.device, dtype=args.dtype, size=args.input_size)
    except ValueError as exc:  # one line, as servesim's other errors
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    profile.save(args.out)
    print(f"wrote {args.out} ({len(profile.rows)} rows) in {time.perf_counter() - started:.1f} s")
    return 0


def _whole(args, prog: str, started: float) -> int:
    """``--whole``: the closed loop's profile, its contention table and the clients' overhead."""
    if args.model not in WHOLE_MODELS or (args.device, args.dtype, args.input_size) != ("cpu", "fp32", None):
        print(f"{prog}: error: --whole serves {', '.join(sorted(WHOLE_MODELS))} on the CPU in fp32 as built "
              f"(got --model {args.model}, --device {args.device}, --dtype {args.dtype}, --input-size "
              f"{args.input_size})", file=sys.stderr)
        return 2
    profile, clients = profile_whole(WHOLE_MODELS[args.model](args.threads), args.model, args.batch_sizes,
                                     args.instances, args.repeats, args.warmup)
    profile.save(args.out)
    command = (f"servesim profile-served --model {args.model} --whole --instances {args.instances} --threads "
               f"{args.threads} --repeats {args.repeats} --warmup {args.warmup} --out {Path(args.out).name}")
    samples = save_clients(clients, Path(args.out), command)
    print(f"wrote {args.out} ({len(profile.rows)} rows{', and its contention table' if args.instances > 1 else ''}) "
          f"and {samples} ({len(clients)} requests) in {time.perf_counter() - started:.1f} s; the clients' own "
          f"costs per request, for the experiment's load: client: {{samples: {samples}}}, or their means "
          f"{{{client_costs(clients.mean())}}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
