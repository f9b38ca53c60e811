"""Batching policies: when a free worker should start a batch, and how large it is.

A policy is a pure function of what the worker can see at that moment — how many items
wait, when the oldest of them arrived, whether more can still arrive, and since when the
worker has been free — so the same object can drive the simulator and a real server. It
never touches the clock: it returns ``(size, wake_at)``:

* ``size > 0``: start a batch of up to ``size`` items now;
* ``size == 0``: start nothing; look again at ``wake_at`` (seconds, absolute) or, if
  ``wake_at`` is ``None``, when the next request arrives.

``max_batch`` is the most items one batch may hold; the engine rejects a request larger
than that at arrival instead of letting it wait forever.
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol, Sequence


Decision = tuple[int, Optional[float]]
NEVER_BUSY = float("-inf")  # ``free_since`` of a worker that has run no batch yet


class BatchingPolicy(Protocol):
    max_batch: int

    def decide(self, now: float, queued: int, oldest_arrival: float, draining: bool,
               free_since: float = NEVER_BUSY) -> Decision:
        """``queued`` items wait (``queued >= 1``); ``draining``: no request will arrive
        again; ``free_since``: when this worker's last batch finished."""


def _check_size(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


class FixedBatcher:
    """Wait until exactly ``batch_size`` items are queued (Clipper/InferLine style).

    Once the trace is exhausted the remainder runs as a smaller batch, so no request is
    stranded at the end of a run.
    """

    def __init__(self, batch_size: int):
        self.max_batch = _check_size("batch_size", batch_size)

    def decide(self, now: float, queued: int, oldest_arrival: float, draining: bool,
               free_since: float = NEVER_BUSY) -> Decision:
        if queued >= self.max_batch or draining:
            return self.max_batch, None
        return 0, None


TIMERS = ("oldest_arrival", "worker_free")


class DynamicBatcher:
    """Dynamic batching: run when ``max_batch`` items are queued, or when the batching
    window has lasted ``max_wait`` seconds, whichever comes first. Servers differ in
    when that window opens (``timer``):

    * ``oldest_arrival``: at the arrival of the oldest queued request. Triton's
      ``max_queue_delay_microseconds`` ("the maximum time a request will be delayed in
      the scheduling queue to wait for additional requests"): a request that queued
      behind a busy worker has used up its wait by the time the worker is free.
    * ``worker_free``: when a free worker holds its first request, that is at the later
      of the oldest arrival and the end of the worker's last batch; it then waits up to
      ``max_wait`` for more. Ray Serve's ``@serve.batch(max_batch_size,
      batch_wait_timeout_s)``, TorchServe's ``batch_size`` / ``max_batch_delay``, and the
      loop of most hand-written PyTorch servers (take one, collect until full or timed out).
      Under load it waits where ``oldest_arrival`` would not, so its batches are larger.

    ``preferred`` (Triton's ``preferred_batch_size``): where a batch of a preferred size
    can be formed, the largest such batch runs at once, without waiting; otherwise the
    rule above applies, and a timed-out window runs as large a batch as is queued.

    ``allowed_sizes`` (TF-Serving's ``allowed_batch_sizes``, the largest equal to
    ``max_batch``): a batch is padded up to the next allowed size and costs what a batch
    of that size costs (:meth:`padded`); the padding answers no one. TF-Serving's
    ``batch_timeout_micros`` counts from the first request enqueued in the open batch,
    which in one FIFO queue is the ``oldest_arrival`` rule.

    ``max_wait = 0`` makes it greedy: a free worker takes whatever is queued, up to
    ``max_batch`` (with ``max_batch = 1`` that is a plain FIFO server). The end of the
    trace changes nothing: a real server cannot know no request will come, so the last
    partial batch still waits out its ``max_wait``.
    """

    def __init__(self, max_batch: int, max_wait: float = 0.0, timer: str = "oldest_arrival",
                 preferred: Sequence[int] = (), allowed_sizes: Sequence[int] = ()):
        self.max_batch = _check_size("max_batch", max_batch)
        if not max_wait >= 0:
            raise ValueError(f"max_wait must be >= 0 seconds, got {max_wait!r}")
        if timer not in TIMERS:
            raise ValueError(f"timer must be one of {', '.join(TIMERS)}, got {timer!r}")
        self.max_wait = float(max_wait)
        self.timer = timer
        self.preferred = tuple(sorted({_check_size("preferred batch size", p) for p in preferred}))
        if self.preferred and self.preferred[-1] > self.max_batch:
            raise ValueError(f"preferred batch sizes must be at most max_batch ({self.max_batch}), "
                             f"got {list(preferred)}")
        self.allowed_sizes = tuple(sorted({_check_size("allowed batch size", a) for a in allowed_sizes}))
        if self.allowed_sizes and self.allowed_sizes[-1] != self.max_batch:
            raise ValueError(f"allowed_sizes: the largest allowed batch size must be max_batch ({self.max_batch}), "
                             f"got {list(allowed_sizes)}")
        self._worker_window = timer == "worker_free"
        self._run = (self.max_batch, None)  # built once: decide runs once per batch

    def decide(self, now: float, queued: int, oldest_arrival: float, draining: bool,
               free_since: float = NEVER_BUSY) -> Decision:
        if queued >= self.max_batch:
            return self._run
        if self.preferred and queued >= self.preferred[0]:
            return max(p for p in self.preferred if p <= queued), None
        opened = free_since if self._worker_window and free_since > oldest_arrival else oldest_arrival
        deadline = opened + self.max_wait
        if now >= deadline:
            return self._run
        return 0, deadline

    def padded(self, items: int) -> int:
        """The batch size ``items`` queued items run and are costed as: the smallest
        allowed size that holds them (``items`` itself without ``allowed_sizes``)."""
        return next((a for a in self.allowed_sizes if a >= items), items)


class DeadlineBatcher:
    """Clockwork / Nexus style: the largest batch whose latency still lets the oldest
    queued request meet its SLO.

    ``batch_latency(b)`` is the cost model's median latency of a batch of ``b`` items. The
    worker never waits (it is work-conserving); when not even a batch of one meets the
    deadline it still runs one item, so late requests are served late rather than never —
    use the engine's drop limit to shed them instead.
    """

    def __init__(self, slo: float, max_batch: int, batch_latency: Callable[[int], float]):
        if not slo > 0:
            raise ValueError(f"slo must be > 0 seconds, got {slo!r}")
        self.slo = float(slo)
        self.max_batch = _check_size("max_batch", max_batch)
        self._latency = [0.0] + [float(batch_latency(b)) for b in range(1, self.max_batch + 1)]

    def decide(self, now: float, queued: int, oldest_arrival: float, draining: bool,
               free_since: float = NEVER_BUSY) -> Decision:
        budget = oldest_arrival + self.slo - now
        size = min(queued, self.max_batch)
        latency = self._latency
        while size > 1 and latency[size] > budget:
            size -= 1
        return size, None
