"""The serving host: one thread that both launches each batch and takes every request in.

A profile times a batch on an otherwise idle server. A real server's host (one Python
process, one thread holding the interpreter lock) has other work: every arriving
request must be taken in — read, parsed, queued — on the same thread that launches the
batch's kernels (or, on a CPU, runs them). When launching is what bounds a batch (eager
PyTorch on a GPU: ResNet-50 fp16 takes 5.8 ms at every batch size from 1 to 32, the
host's launches and not the GPU), the intake of the requests that arrive meanwhile
stretches the batch, and the more load, the more stretch: a server that a device-time
model calls stable falls behind.

:class:`ServingHost` says what the host costs: ``intake_s`` per request taken in, and
``launch_share``, the part of a batch's profiled time for which the host is busy
launching it (1 on a CPU, where the host runs the model, and on a launch-bound eager
GPU; near 0 with CUDA graphs, whose launch is one call). :class:`HostClock` plays it
during a run, on the trace's arrival times, which an open-loop run knows in advance:

* the host takes requests in, in arrival order, whenever it is not launching; intake
  it could not finish before a batch starts is still owed (a backlog);
* a batch starting at ``t`` with profiled time ``span`` needs ``launch_share * span``
  of host time; the backlog and the intake of every request arriving before that work
  is done come first, interleaved with it (one thread), so the launches end at
  ``launched``;
* the batch ends at ``max(t + span, launched)``: the device's own time, or the host's
  if the host is the later. In the slack between ``launched`` and the end the host
  takes in what arrives.

A request's own intake does not delay its own admission to the queue (at most
``intake_s``, well under a batch), a simplification the closing of a batch's window
would otherwise need. One host serves one worker: the run has one replica.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ServingHost:
    """What the serving host costs (see the module docstring): ``intake_s`` seconds of
    host time per request taken in; ``launch_share`` (0..1) of a batch's profiled time
    spent by the host launching it."""

    intake_s: float
    launch_share: float = 1.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.intake_s) and self.intake_s >= 0):
            raise ValueError(f"intake_s must be a finite number >= 0 seconds, got {self.intake_s!r}")
        if not 0 <= self.launch_share <= 1:
            raise ValueError(f"launch_share must lie in [0, 1], got {self.launch_share!r}")

    def clock(self, arrivals: np.ndarray) -> "HostClock":
        """The host's state for one run over the (sorted) ``arrivals``."""
        return HostClock(self, arrivals)


class HostClock:
    """The host during one run: how far its intake has got (``taken``: arrivals taken in,
    ``free``: when it finishes the intake it owes). Batches must be played in start
    order (one worker)."""

    def __init__(self, host: ServingHost, arrivals: np.ndarray):
        self.intake = float(host.intake_s)
        self.share = float(host.launch_share)
        self.arrivals = np.asarray(arrivals, dtype=np.float64).tolist()  # floats: scanned one by one
        self.taken = 0
        self.free = float("-inf")
        self.busy = 0.0  # host seconds spent on intake and launches, for utilisation

    def _take_in(self, until: float) -> None:
        """Take in every arrival before ``until`` from where the host is; intake it cannot
        finish by ``until`` stays owed (``free`` later than ``until``)."""
        arrivals, j, free, c = self.arrivals, self.taken, self.free, self.intake
        n = len(arrivals)
        while j < n and arrivals[j] < until:
            a = arrivals[j]
            free = (a if a > free else free) + c
            j += 1
        self.busy += (j - self.taken) * c
        self.taken, self.free = j, free

    def finish_times(self, start: float, spans) -> list[float]:
        """When work that ends ``spans`` (ascending, not empty, seconds) after ``start`` on
        an idle host ends on this one: ``max(start + span, launched(span))``, where
        ``launched`` is when the host has done ``launch_share * span`` of launching after
        its backlog and the intake of what arrives meanwhile. The last span is the
        batch's own end."""
        self._take_in(start)
        arrivals, c, share = self.arrivals, self.intake, self.share
        n, j = len(arrivals), self.taken
        extra = max(self.free, start) - start  # intake still owed, done first
        out = []
        for span in spans:
            launched = start + share * span + extra
            while j < n and arrivals[j] < launched:
                launched += c
                extra += c
                j += 1
            out.append(max(start + span, launched))
        launches = share * spans[-1]
        self.busy += (j - self.taken) * c + launches
        self.taken, self.free = j, start + launches + extra
        self._take_in(out[-1])  # the slack before the batch ends
        return out

    def finish(self, start: float, span: float) -> float:
        """The end of one batch of profiled time ``span`` starting at ``start``."""
        return self.finish_times(start, (span,))[0]
