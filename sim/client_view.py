"""What a closed loop's clients see, in the terms perf_analyzer prints them.

perf_analyzer reports, per concurrency, the throughput, the average and p50/p90/p95/p99
latency seen by its clients, and where an average request's time went: client send,
network and server receive, server queue, compute input / infer / output, client
receive. The simulator knows a request's queue (arrival to its batch's start) and its
compute (its batch), and adds a client's fixed costs as one measured figure,
``client_overhead_s`` (:class:`~sim.closed_loop.ClosedLoop`), to the latency clients
see. Splitting that figure (send, network, receive) or the compute (input, infer,
output) needs those parts measured: each would be a field of the load and an entry of
``split_ms`` here, the latency seen being the server's plus their sum.
"""

from __future__ import annotations

import numpy as np

from .closed_loop import ClosedLoop, RequestRate
from .metrics import _latency_ms
from .records import COMPLETED, RequestTable


def client_view(table: RequestTable, load: ClosedLoop, summary: dict, warmup: float = 0.0) -> dict:
    """``clients`` and a ``closed_loop`` block: throughput (requests and items per
    second: the run's, from its ``summary``), the latency clients see (the server's plus
    their overhead; mean and percentiles, ms) and the mean ``split_ms`` of a served request
    (queue, compute, client overhead). A request-rate load adds ``request_rate``: its rate,
    arrivals, cap and the share of sends that went later than due (held by the cap).
    ``warmup`` (seconds) leaves out requests sent earlier, as the summary did."""
    skip = int(np.searchsorted(table.arrival, warmup, side="left")) if warmup > 0 else 0
    done = table.status[skip:] == COMPLETED
    arrival, start, finish = (column[skip:][done] for column in (table.arrival, table.start, table.finish))
    rate = summary["throughput_rps"]
    overhead = load.client_overhead_s
    view = {
        "clients": load.clients,
        "request_items": load.size,
        "throughput_rps": rate,
        "throughput_items_per_s": None if rate is None else round(rate * load.size, 6),
        "latency_ms": _latency_ms(finish - arrival + overhead),
        "split_ms": {"queue": _mean_ms(start - arrival), "compute": _mean_ms(finish - start),
                     "client_overhead": round(overhead * 1e3, 6)},
    }
    if isinstance(load, RequestRate):  # perf_analyzer warns when many sends were late
        due = load.schedule()[skip:][done]
        view["request_rate"] = {"rate": load.rate, "arrival": load.arrival, "max_outstanding": load.clients,
                                "delayed_share": round(float((arrival > due).mean()), 6) if due.size else None}
    return {"clients": load.clients, "closed_loop": view}


def _mean_ms(seconds: np.ndarray):
    return round(float(seconds.mean()) * 1e3, 6) if seconds.size else None
