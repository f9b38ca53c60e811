"""What a YAML file's ``load:`` may name: load that is not a trace known in advance.

``load: {kind: closed_loop, ...}`` stands instead of ``trace:``: clients that wait for
their answers (:mod:`sim.closed_loop`), perf_analyzer's concurrency mode. Sweeping
``load.clients`` is a concurrency sweep in one experiment. ``load: {kind: request_rate,
...}`` is perf_analyzer's request-rate mode with a cap on the requests outstanding.
"""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from servesim.sim.closed_loop import ClosedLoop, RequestRate, ThinkTime
from servesim.traces import _checks

from .registry import LOADS
from .specs import MAX_BATCH, Spec

# The most clients a closed loop may have: a send is placed among the sends not yet
# routed (at most one per client) by shifting them, so a larger population is slow, and
# no load generator drives one.
MAX_CLIENTS = 100_000
# The longest a client's fixed overhead or mean think time may be: an hour, far above any
# measured round trip; a larger value is a typo (seconds for milliseconds).
MAX_PAUSE_MS = 3.6e6


class Think(Spec):
    """A client's pause between an answer and its next send: ``zero``, ``fixed``
    (``mean_ms`` each time) or ``exponential`` (mean ``mean_ms``)."""

    kind: Literal["zero", "fixed", "exponential"] = "zero"
    mean_ms: Optional[PositiveFloat] = Field(default=None, le=MAX_PAUSE_MS)

    @model_validator(mode="after")
    def _mean_of_a_pause(self):
        if (self.kind == "zero") != (self.mean_ms is None):
            raise ValueError(f"mean_ms: think kind {self.kind!r} "
                             + ("takes no mean_ms" if self.kind == "zero" else "needs its mean_ms (> 0)"))
        return self

    def build(self) -> ThinkTime:
        return ThinkTime(self.kind, 0.0 if self.mean_ms is None else self.mean_ms / 1e3)


@LOADS.register
class ClosedLoopLoad(Spec):
    """``clients`` clients, each sending a request of ``size`` items, waiting for its
    answer, then ``client_overhead_ms`` (its measured fixed cost outside the server:
    serialising, the network, reading the answer; it delays the next send and adds to the
    latency the client sees) and a ``think`` time, until ``count`` requests are sent."""

    kind: Literal["closed_loop"]
    clients: PositiveInt = Field(le=MAX_CLIENTS)
    count: PositiveInt = Field(le=_checks.MAX_ARRIVALS)
    size: PositiveInt = Field(default=1, le=MAX_BATCH)
    think: Think = Field(default_factory=Think)
    client_overhead_ms: NonNegativeFloat = Field(default=0.0, le=MAX_PAUSE_MS)

    def build(self, seed: np.random.SeedSequence) -> ClosedLoop:
        """The load of one run, its think times drawn from ``seed`` (the run's arrival stream)."""
        return ClosedLoop(self.clients, self.count, self.think.build(), self.size, self.client_overhead_ms / 1e3, seed)


@LOADS.register
class RequestRateLoad(Spec):
    """``count`` requests of ``size`` items due at ``rate`` per second (``poisson`` or
    ``constant`` gaps), at most ``max_outstanding`` out at once: a send due while that
    many are out waits for an answer (and the client's ``client_overhead_ms``), as
    perf_analyzer's request-rate mode delays it (:class:`~sim.closed_loop.RequestRate`)."""

    kind: Literal["request_rate"]
    rate: PositiveFloat
    arrival: Literal["poisson", "constant"] = "poisson"
    max_outstanding: PositiveInt = Field(le=MAX_CLIENTS)
    count: PositiveInt = Field(le=_checks.MAX_ARRIVALS)
    size: PositiveInt = Field(default=1, le=MAX_BATCH)
    client_overhead_ms: NonNegativeFloat = Field(default=0.0, le=MAX_PAUSE_MS)

    @property
    def clients(self) -> int:
        """The most requests out at once: what a closed loop's clients are (the checks of
        :func:`experiments.runner.validate_runs` read it so)."""
        return self.max_outstanding

    def build(self, seed: np.random.SeedSequence) -> RequestRate:
        """The load of one run, its schedule drawn from ``seed`` (the run's arrival stream)."""
        return RequestRate(self.max_outstanding, self.count, size=self.size,
                           client_overhead_s=self.client_overhead_ms / 1e3, seed=seed, rate=self.rate,
                           arrival=self.arrival)
