"""Closed-loop load: clients that wait for their answer before they send again.

An open-loop trace fixes every arrival in advance. A closed loop's arrivals do not exist
until the server answers: each of ``clients`` clients sends a request of ``size`` items,
waits for its answer, spends ``client_overhead_s`` outside the server and a think time
drawn from ``think``, then sends again, until ``count`` requests have been sent.
perf_analyzer's concurrency mode (``--concurrency-range N``) is ``clients=N`` with no
think time; a Locust or wrk user population with think times is the rest.

The engine (:mod:`sim.cluster`) takes such arrivals from :class:`Sends`, told of each
batch's answers as the batch starts (its end is known then): every send known and not
yet routed sits, in time order, where the engine reads arrival times, so lazy routing
reads the next arrival as it does a trace's. Clients are alike (one size, one think-time
law), so an answer need not say whose it was: each answer makes one send.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

THINK_KINDS = ("zero", "fixed", "exponential")
BLOCK = 4096  # think times drawn at a time (a draw then costs a list pop)


@dataclass(frozen=True)
class ThinkTime:
    """A client's pause between an answer and its next send, in seconds: ``zero``,
    ``fixed`` (``mean_s`` each time) or ``exponential`` with mean ``mean_s``."""

    kind: str = "zero"
    mean_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in THINK_KINDS:
            raise ValueError(f"think kind must be one of {THINK_KINDS}, got {self.kind!r}")
        if not (np.isfinite(self.mean_s) and self.mean_s >= 0):
            raise ValueError(f"think mean_s must be a finite number >= 0, got {self.mean_s!r}")
        if self.kind == "zero" and self.mean_s:
            raise ValueError(f"a zero think time has no mean_s (got {self.mean_s!r})")

    def sampler(self, rng: np.random.Generator) -> Callable[[], float]:
        """``draw() -> seconds``; exponential draws come from ``rng`` :data:`BLOCK` at a time."""
        if self.kind != "exponential":
            return lambda mean=self.mean_s: mean
        drawn: list[float] = []

        def draw() -> float:
            if not drawn:
                drawn.extend(rng.exponential(self.mean_s, BLOCK)[::-1].tolist())  # popped in the order drawn
            return drawn.pop()
        return draw


@dataclass(frozen=True)
class ClosedLoop:
    """The closed-loop load of a run: ``clients`` clients of ``size`` items per request,
    ``count`` requests in all. ``client_overhead_s``: a client's fixed time per request
    outside the server (serialising, the network both ways, reading the answer), as
    measured; it delays the next send, and a client sees its latency as the server's plus
    this. ``seed`` (anything :func:`numpy.random.default_rng` takes) seeds the think
    times, so a run is the same each time it is served."""

    clients: int
    count: int
    think: ThinkTime = field(default_factory=ThinkTime)
    size: int = 1
    client_overhead_s: float = 0.0
    seed: object = 0

    def __post_init__(self) -> None:
        for name in ("clients", "count", "size"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"closed loop: {name} must be a whole number >= 1, got {value!r}")
        if not (np.isfinite(self.client_overhead_s) and self.client_overhead_s >= 0):
            raise ValueError(f"closed loop: client_overhead_s must be a finite number >= 0, "
                             f"got {self.client_overhead_s!r}")

    @property
    def source(self) -> str:
        """What the run's summary names as its arrivals."""
        think = self.think.kind if self.think.kind == "zero" else f"{self.think.kind} {self.think.mean_s:g} s"
        return f"closed loop: {self.clients} clients, {self.count} requests of {self.size} item(s), think {think}"

    def sends(self, times: list) -> "Sends":
        """The sends of one run, kept in ``times`` (the engine's arrival times)."""
        return Sends(self, times)


class Sends:
    """A closed loop's sends during one run. ``times[arrived:created]`` (``arrived``: the
    engine's count of routed arrivals) are the sends known and not yet routed, in time
    order; the slots after them hold +inf until more are known. A new send goes after any
    known send at the same time, and never before a routed one (it comes from an answer,
    which is never earlier than the arrivals already routed), so request ids follow send
    times, as a trace's follow its arrivals."""

    def __init__(self, load: ClosedLoop, times: list):
        self.times, self.limit, self.overhead = times, load.count, load.client_overhead_s
        self.think = load.think.sampler(np.random.default_rng(load.seed))
        self.created = 0
        for _ in range(min(load.clients, load.count)):  # each client thinks, then sends its first request
            self.add(self.think(), 0)

    def answered(self, at: float, count: int, arrived: int) -> None:
        """``count`` requests are answered at ``at``: their clients send again after their
        overhead and a think time each, while requests are left to send."""
        for _ in range(min(count, self.limit - self.created)):
            self.add(at + self.overhead + self.think(), arrived)

    def add(self, at: float, arrived: int) -> None:
        times, end = self.times, self.created
        slot = bisect.bisect_right(times, at, arrived, end)
        if slot < end:
            times[slot + 1:end + 1] = times[slot:end]
        times[slot] = at
        self.created = end + 1
