"""Whether a server kept up with its arrivals, from its backlog, over a table fed in chunks.

The backlog at time t is the number of requests that have arrived and are not yet done
with (answered, dropped or rejected). A server that keeps up has a backlog that comes
and goes; one that fell behind for good has a backlog that grows with time, so that at
the end it is well above anything the first half saw.

``overloaded``: the backlog grew over the second half of the arrivals by more than
:data:`GROWTH` of the requests that arrived in it, and ends above :data:`ABOVE_FIRST_HALF`
times the largest backlog of the first half. Unlike a latency threshold it needs no SLO;
unlike utilisation it tells a busy server from a drowning one, even one that falls
behind by a few percent of its load.

Why it streams exactly: a request's finish is never before its arrival, and every
request with a larger id arrives no earlier. So the requests gone by the arrival of
request i are among the requests that arrived by then: those fed so far, and those tied
with i that come in the next chunk, finishing at that very instant (rejected at arrival,
or served in no time). Missing the latter only lowers the backlog counted at the
requests before them in the tie, never above the backlog at the tie's last request,
which is counted with them all; so the largest backlog is exact without holding a tie
back. Only that largest backlog of the first half needs more than counters: it keeps
the finishes still to come of the requests fed (the backlog itself), as a few sorted
runs merged when one grows to half the size of the one before, so each finish is
sorted O(log backlog) times.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

GROWTH = 0.01  # overloaded: the backlog grew by more than this share of the second half's arrivals...
ABOVE_FIRST_HALF = 1.5  # ...and ends above this many times the first half's largest backlog


class Backlog:
    """The backlog figures of requests fed in id order (:meth:`add`), whose last arrival
    is ``last_arrival``; :meth:`figures` once all have come."""

    def __init__(self, last_arrival: float):
        self.end = last_arrival
        self.mid: Optional[float] = None  # halfway between the first arrival and the last
        self.count = 0  # requests seen
        self.half = 0  # of them, those arriving by mid
        self.gone_by_mid = 0  # finishes at or before mid
        self.gone_by_end = 0  # finishes at or before the last arrival
        self.first_half_max = 0  # the largest backlog at an arrival of the first half, so far
        self.first_half_done = False
        self.gone = 0  # finishes at or before the last counted arrival
        self.pending: list[np.ndarray] = []  # sorted runs: the other finishes of the counted requests

    def add(self, arrival: np.ndarray, finish: np.ndarray) -> None:
        """The next requests' arrival and finish times (finish NaN: never done with)."""
        if not arrival.size:
            return
        if self.mid is None:
            self.mid = (arrival[0] + self.end) / 2
        self.count += arrival.size
        self.gone_by_mid += int(np.count_nonzero(finish <= self.mid))
        self.gone_by_end += int(np.count_nonzero(finish <= self.end))
        if self.first_half_done:
            return
        first = int(np.searchsorted(arrival, self.mid, side="right"))
        self.first_half_done = first < arrival.size
        if first:
            self._count_first_half(arrival[:first], finish[:first])
        if self.first_half_done:
            self.pending = []  # only the first half's backlog is counted at each arrival

    def _count_first_half(self, arrival: np.ndarray, finish: np.ndarray) -> None:
        """The backlog at each of these first-half arrivals."""
        done = np.sort(finish[np.isfinite(finish)])
        gone = np.searchsorted(done, arrival, side="right") + self.gone
        for run in self.pending:
            gone += np.searchsorted(run, arrival, side="right")
        backlog = self.half + np.arange(1, arrival.size + 1) - gone
        self.first_half_max = max(self.first_half_max, int(backlog.max()))
        self.half += arrival.size
        self._keep_pending(done, arrival[-1])

    def _keep_pending(self, done: np.ndarray, now: float) -> None:
        """Add the sorted finishes ``done`` to the pending runs and move every finish at or
        before ``now`` (the last counted arrival) into :attr:`gone`."""
        runs = []
        for run in [*self.pending, done]:
            past = int(np.searchsorted(run, now, side="right"))
            self.gone += past
            if past < run.size:
                runs.append(run[past:])
        while len(runs) > 1 and 2 * runs[-1].size >= runs[-2].size:
            last = runs.pop()
            runs[-1] = np.sort(np.concatenate([runs[-1], last]), kind="stable")
        self.pending = runs

    def figures(self) -> dict:
        """``backlog_mid``, ``backlog_end`` and ``overloaded``; ``None`` each under two requests."""
        if self.count < 2:
            return {"backlog_mid": None, "backlog_end": None, "overloaded": None}
        backlog_mid = self.half - self.gone_by_mid
        backlog_end = self.count - self.gone_by_end
        overloaded = (backlog_end - backlog_mid > GROWTH * (self.count - self.half)
                      and backlog_end > ABOVE_FIRST_HALF * self.first_half_max)
        return {"backlog_mid": backlog_mid, "backlog_end": backlog_end, "overloaded": bool(overloaded)}


def keeping_up(arrival: np.ndarray, finish: np.ndarray) -> dict:
    """:class:`Backlog`'s figures of a whole table (arrivals in time order)."""
    if not arrival.size:
        return Backlog(0.0).figures()
    backlog = Backlog(arrival[-1])
    backlog.add(arrival, finish)
    return backlog.figures()
