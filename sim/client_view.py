"""What a closed loop's clients see, in the terms perf_analyzer prints them.

perf_analyzer reports, per concurrency, the throughput, the average and p50/p90/p95/p99
latency seen by its clients, and where an average request's time went: client send,
network + server send/recv, server queue, server compute input / infer / output, client
receive. The simulator knows a request's queue (arrival to its batch's start) and its
compute (its batch); the client's parts are the load's measured costs, fixed
(:class:`~sim.closed_loop.ClientCosts`) or, drawn from samples, request ``k``'s own draw
(:meth:`~sim.closed_loop.ClientSamples.drawn`, the draws the engine used: see
:mod:`sim.closed_loop` for where that is exact and where equal in distribution only); the
compute's input / infer / output split is the batch's simulated compute apportioned by the
shares a perf_analyzer profile measured at that batch size (:class:`ComputeSplit`), or
not split where none was measured. The parts add up to the mean latency the clients see,
exactly: a request's is ``send + network + (finish - arrival) + recv``. Everything here is
computed from the request table after the run, so the engine tracks nothing for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .closed_loop import ClosedLoop, RequestRate
from .metrics import _latency_ms
from .records import COMPLETED, RequestTable

COMPUTE_PARTS = ("compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class ComputeSplit:
    """The shares of a batch's compute that are input, infer and output (perf_analyzer's
    Server Compute Input / Infer / Output), measured at ``batch_sizes`` (items, increasing);
    ``parts_ms`` holds each part's measured mean at those sizes. Between two measured sizes
    each share is interpolated linearly (so the three still add up to 1); beyond them the
    nearest measured size's shares hold."""

    batch_sizes: tuple[int, ...]
    parts_ms: tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]  # input, infer, output

    def __post_init__(self) -> None:
        sizes = np.asarray(self.batch_sizes)
        if sizes.size == 0 or np.any(np.diff(sizes) <= 0):
            raise ValueError(f"compute split: batch sizes must be increasing and not empty, got {self.batch_sizes}")
        parts = np.asarray(self.parts_ms, dtype=float)
        if parts.shape != (3, sizes.size) or not np.all(np.isfinite(parts)) or np.any(parts < 0) \
                or np.any(parts.sum(axis=0) <= 0):
            raise ValueError("compute split: input, infer and output need a time >= 0 at each batch size, "
                             "adding up to more than 0")

    def shares(self, items: np.ndarray) -> np.ndarray:
        """Rows of (input, infer, output) shares for batches of ``items`` items."""
        parts = np.asarray(self.parts_ms, dtype=float)
        fractions = parts / parts.sum(axis=0)
        return np.column_stack([np.interp(items, self.batch_sizes, f) for f in fractions])


def client_view(table: RequestTable, load: ClosedLoop, summary: dict, warmup: float = 0.0,
                compute: Optional[ComputeSplit] = None) -> dict:
    """``clients`` and a ``closed_loop`` block: throughput (requests and items per
    second: the run's, from its ``summary``), the latency clients see (the server's plus
    their fixed costs; mean and percentiles, ms) and the mean ``split_ms`` of a served
    request (:func:`split_ms`). A request-rate load adds ``request_rate``: its rate,
    arrivals, cap and the share of sends that went later than due (held by the cap).
    ``warmup`` (seconds) leaves out requests sent earlier, as the summary did."""
    skip = int(np.searchsorted(table.arrival, warmup, side="left")) if warmup > 0 else 0
    done = table.status[skip:] == COMPLETED
    arrival, start, finish, items = (column[skip:][done] for column in (table.arrival, table.start, table.finish,
                                                                        table.batch_size))
    drawn = load.client.drawn(load.seed, len(table))  # one number each, or one per request id
    costs = tuple(part if np.ndim(part) == 0 else part[skip:][done] for part in drawn)
    rate = summary["throughput_rps"]
    view = {
        "clients": load.clients,
        "request_items": load.size,
        "throughput_rps": rate,
        "throughput_items_per_s": None if rate is None else round(rate * load.size, 6),
        "latency_ms": _latency_ms(finish - arrival + sum_of(costs)),
        "split_ms": split_ms(costs, arrival, start, finish, items, compute),
    }
    if isinstance(load, RequestRate):  # perf_analyzer warns when many sends were late
        due = load.schedule()[skip:][done]
        view["request_rate"] = {"rate": load.rate, "arrival": load.arrival, "max_outstanding": load.clients,
                                "delayed_share": round(float((arrival > due).mean()), 6) if due.size else None}
    return {"clients": load.clients, "closed_loop": view}


def seen_latency_s(table: RequestTable, load: ClosedLoop) -> np.ndarray:
    """Each request's latency as its client sees it, in seconds: ``send + network +
    (finish - arrival) + recv``, its own drawn costs (NaN where it was not served)."""
    return table.finish - table.arrival + sum_of(load.client.drawn(load.seed, len(table)))


def sum_of(costs):
    """A request's client costs, added in one order (fixed costs: their ``total_s``)."""
    send, network, recv = costs
    return send + network + recv


def split_ms(costs, arrival: np.ndarray, start: np.ndarray, finish: np.ndarray, items: np.ndarray,
             compute: Optional[ComputeSplit]) -> dict:
    """The mean served request's time by part, in ms, in perf_analyzer's order:
    ``client_send``, ``network``, ``queue``, ``compute`` (its batch) and its
    ``compute_input`` / ``compute_infer`` / ``compute_output`` (``None`` each where the
    profile measured no split), ``client_recv``. ``costs``: the client's send, network and
    receive, each one number or one per request. Client send, network, queue, compute and
    client receive add up to the mean latency the clients see; compute is the sum of its
    three parts, where they are measured."""
    batch = finish - start
    parts = dict.fromkeys(COMPUTE_PARTS)
    if compute is not None and batch.size:
        parts = dict(zip(COMPUTE_PARTS, (_mean_ms(batch * share) for share in compute.shares(items).T)))
    send, network, recv = (_mean_ms(np.asarray(part)) for part in costs)
    return {"client_send": send, "network": network, "queue": _mean_ms(start - arrival), "compute": _mean_ms(batch),
            **parts, "client_recv": recv}


def _mean_ms(seconds: np.ndarray):
    """The mean of ``seconds`` in ms (one number: itself), rounded to 1 ns; ``None`` if empty."""
    return round(float(seconds.mean()) * 1e3, 6) if seconds.size else None
