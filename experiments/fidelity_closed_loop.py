"""``servesim fidelity`` of a closed loop: real clients against real instances, and the simulation of the same.

A point with ``load: {kind: closed_loop}`` is served for real by
:func:`sim.real_clients.serve_closed_loop` (``load.clients`` client threads,
``serving.instances`` instance threads running the whole model ``real.model`` of
:data:`experiments.real_models.WHOLE_MODELS`, the point's dynamic batcher), ``real.repeats``
times, and simulated once with the closed-loop engine. The simulation's costs come from
isolated measurements only, never from the closed-loop runs: the profile and contention
table ``model.profile`` names and the load's ``client`` costs (all measured beforehand
by ``servesim profile-served --whole``: the costs as constants or as the file of measured
requests, ``client: {samples: PATH}``), or, with ``real.calibrate``, the same three
measured again on the point's own model object just before its real runs
(:func:`experiments.profile_served.profile_whole`; saved in the point's folder, the
clients' requests as ``served_profile.clients.csv``, from which the point's simulation
draws each request's client costs).

The row compares what the clients see (perf_analyzer's figures: throughput, p50/p90/p99
and mean latency, send to answer), the mean split of a request (client send, network, queue,
compute, client receive; a real run's network is inside its queue) and the mean batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from servesim.sim import summarize
from servesim.sim.client_view import client_view, seen_latency_s
from servesim.sim.real_clients import real_client_view, serve_closed_loop

from .config import ConfigError
from .fidelity import SERVED_PROFILE, Progress, costed_by, figures_row, numbered, write_point
from .load_specs import Client
from .profile_served import profile_whole, save_clients
from .real_models import WHOLE_MODELS, warm_up
from .runner import prepare, simulate_config

SEEN = ("closed_loop",)
FIGURES = (("p50", (*SEEN, "latency_ms", "p50")), ("p90", (*SEEN, "latency_ms", "p90")),
           ("p99", (*SEEN, "latency_ms", "p99")), ("mean", (*SEEN, "latency_ms", "mean")),
           ("throughput", (*SEEN, "throughput_rps")),
           *((f"{part}_ms", (*SEEN, "split_ms", part)) for part in ("client_send", "network", "queue", "compute",
                                                                     "client_recv")),
           ("mean_batch", ("mean_batch_items",)))


def check_closed_loop(cfg, path: Path) -> None:
    """What the real closed loop serves: clients that think (not a request rate), a
    dynamic batcher without padding, a whole model of WHOLE_MODELS."""
    if cfg.load.kind != "closed_loop":
        raise ConfigError(f"{path}: load.kind: the real clients run a closed loop, not {cfg.load.kind!r}")
    if cfg.load.count is None:
        raise ConfigError(f"{path}: load.duration_s: the real clients send a count of requests (load.count); "
                          f"got duration_s {cfg.load.duration_s!r}")
    if cfg.real.model not in WHOLE_MODELS:
        raise ConfigError(f"{path}: real.model: a closed loop's instances serve a whole model, one of "
                          f"{', '.join(sorted(WHOLE_MODELS))}; got {cfg.real.model!r}")
    batching = cfg.serving.batching
    if batching.policy != "dynamic" or getattr(batching, "allowed_sizes", None):
        raise ConfigError(f"{path}: serving.batching.policy: the real instances batch dynamically, without "
                          f"allowed_sizes; got {batching.policy!r}")


def closed_loop_point(run, base_dir: Path, path: Path, run_dir: Path, phase: Progress) -> dict:
    """Serve one closed-loop point for real ``real.repeats`` times and simulate it: its
    fidelity row (and its folder: request tables, summaries, the CDF overlay)."""
    cfg = run.config
    phase.show("building and warming up the real model")
    real = WHOLE_MODELS[cfg.real.model](cfg.real.threads)
    max_batch = prepare(cfg, base_dir).batcher.max_batch
    warm_up(real.staged, np.arange(real.rows), max_batch)
    if cfg.real.calibrate:
        with phase("measuring the model, its contention and the clients in isolation"):
            rounds = cfg.real.calibrate_rounds
            profile, clients = profile_whole(real, cfg.model.name, range(1, max_batch + 1), cfg.serving.instances,
                                             repeats=rounds, warmup=max(1, rounds // 10))
        cfg = costed_by(cfg, profile, run_dir / SERVED_PROFILE, path)
        samples = save_clients(clients, run_dir / SERVED_PROFILE, "servesim fidelity, real.calibrate: just before "
                                                                  "this point's real runs")
        cfg = cfg.model_copy(update={"load": cfg.load.model_copy(
            update={"client": Client(samples=str(samples.resolve()))})})
    reals = []
    for repeat in range(cfg.real.repeats):
        prepared = prepare(cfg, base_dir)  # a fresh batcher; the same clients and think times
        which = f" {repeat + 1}/{cfg.real.repeats}" if cfg.real.repeats > 1 else ""
        with phase(f"real run{which}: {cfg.load.clients} clients, {cfg.load.count} requests, "
                   f"{cfg.serving.instances} instance(s)"):
            reals.append(serve_closed_loop(real.staged, prepared.batcher, prepared.trace,
                                           instances=cfg.serving.instances, inputs=real.rows))
    with phase("simulating and comparing"):
        simulated, load, _ = simulate_config(cfg, base_dir)
        slo = None if cfg.slo_ms is None else cfg.slo_ms / 1e3
        summaries = {"sim": _seen(summarize(simulated, slo, cfg.warmup_s),
                                  lambda s: client_view(simulated.requests, load, s, cfg.warmup_s)),
                     "real": [_seen(summarize(r.results, slo, cfg.warmup_s),
                                    lambda s, r=r: real_client_view(r, load, s, cfg.warmup_s)) for r in reals]}
        row = figures_row(run, summaries, FIGURES)
        sim_table = simulated.requests
        done = sim_table.status == 0
        named = [("sim_requests.parquet", "simulated", sim_table.columns(), seen_latency_s(sim_table, load)[done] * 1e3)]
        named += [(f"real_requests{k}.parquet", f"real{k}", _real_columns(r), (r.clients.received - r.clients.sent) * 1e3)
                  for k, r in numbered(reals)]
        write_point(run, row, summaries, named, run_dir)
    return row


def _seen(summary: dict, view) -> dict:
    """``summary`` with the clients' view (``view(summary)``) added."""
    summary.update(view(summary))
    return summary


def _real_columns(run) -> dict:
    """A real closed-loop run's request table, with its clients' columns."""
    clients = run.clients
    return {**run.results.requests.columns(), "client": clients.client, "sent": clients.sent,
            "received": clients.received}
