"""Closed-loop load: clients that wait for their answer before they send again.

An open-loop trace fixes every arrival in advance. A closed loop's arrivals do not exist
until the server answers: each of ``clients`` clients sends a request of ``size`` items,
waits for its answer, spends its fixed costs outside the server (:class:`ClientCosts`) and
a think time drawn from ``think``, then sends again, until ``count`` requests have been
sent or, with ``duration_s``, until its next send would fall at or after that moment.
perf_analyzer's concurrency mode (``--concurrency-range N``) is ``clients=N`` with no
think time; a Locust or wrk user population with think times is the rest.

The engine (:mod:`sim.cluster`) takes such arrivals from :class:`Sends`, told of each
batch's answers as the batch starts (its end is known then): every send known and not
yet routed sits, in time order, where the engine reads arrival times, so lazy routing
reads the next arrival as it does a trace's. Clients are alike (one size, one think-time
law), so an answer need not say whose it was: each answer makes one send.

A loop that ends by time (:class:`TimedSends`) does not know in advance how many requests
it sends, and the engine holds room for ``count`` of them: its ``count`` is that room, and
a loop that would send more raises :class:`SendsExceeded`, which says how much room a run
again would need (``experiments.runner`` runs it again with that much).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .errors import SimulationError

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
class ClientCosts:
    """A client's fixed costs per request outside the server, in seconds, as perf_analyzer
    splits them: ``send_s`` (client send: serialising the request), ``network_s`` (network
    + server send/recv: the wire both ways and the server's protocol handling) and
    ``recv_s`` (client receive: reading the answer). Measured figures (a config's, or an
    imported perf_analyzer profile's), never assumed ones. The engine needs their sum only
    (:attr:`total_s`): a client spends it between an answer and its next send, and sees
    its latency as the server's plus it (in a closed loop only the cycle's length matters,
    not where in it the client's part falls)."""

    send_s: float = 0.0
    network_s: float = 0.0
    recv_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("send_s", "network_s", "recv_s"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"client costs: {name} must be a finite number >= 0, got {value!r}")

    @property
    def total_s(self) -> float:
        return self.send_s + self.network_s + self.recv_s


@dataclass(frozen=True)
class ClosedLoop:
    """The closed-loop load of a run: ``clients`` clients of ``size`` items per request,
    ``count`` requests in all; with ``duration_s``, as many as the clients send before that
    moment (the requests out then are answered; ``count`` is then only the room the engine
    holds, see the module docstring). ``client``: a client's measured fixed costs per
    request outside the server (:class:`ClientCosts`). ``seed`` (anything
    :func:`numpy.random.default_rng` takes) seeds the think times, so a run is the same
    each time it is served."""

    clients: int
    count: int
    think: ThinkTime = field(default_factory=ThinkTime)
    size: int = 1
    client: ClientCosts = field(default_factory=ClientCosts)
    seed: object = 0
    duration_s: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ("clients", "count", "size"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"closed loop: {name} must be a whole number >= 1, got {value!r}")
        if self.duration_s is not None and not (np.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(f"closed loop: duration_s must be a finite number > 0, got {self.duration_s!r}")

    @property
    def client_overhead_s(self) -> float:
        """A client's time per request outside the server: what the engine waits before its
        next send (think time apart)."""
        return self.client.total_s

    @property
    def source(self) -> str:
        """What the run's summary names as its arrivals."""
        think = self.think.kind if self.think.kind == "zero" else f"{self.think.kind} {self.think.mean_s:g} s"
        sent = f"{self.count} requests" if self.duration_s is None else f"sending for {self.duration_s:g} s"
        return f"closed loop: {self.clients} clients, {sent} of {self.size} item(s), think {think}"

    def sends(self, times: list) -> "Sends":
        """The sends of one run, kept in ``times`` (the engine's arrival times)."""
        return Sends(self, times) if self.duration_s is None else TimedSends(self, times)


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

    @property
    def done(self) -> bool:
        """Whether the clients sent all they were to send (else the loop stalled)."""
        return self.created == self.limit

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


class SendsExceeded(SimulationError):
    """A loop that ends by time would send more requests than the engine holds room for
    (its ``count``). ``room``: enough room for a run again, from the rate of sends so far
    (a run with more room than it uses is the same run)."""

    def __init__(self, message: str, room: int):
        super().__init__(message, room)  # all in args: SimPy raises a copy made from them
        self.room = room

    def __str__(self) -> str:
        return self.args[0]

    @classmethod
    def at(cls, room: int, at: float, until: float, clients: int) -> "SendsExceeded":
        """``room`` sends were made by ``at``, before the end ``until``."""
        needed = int(room * max(2.0, 1.25 * until / at)) + clients if at > 0 else 2 * room + clients
        return cls(f"the closed loop sent {room} requests by {at:g} s, before its end at {until:g} s: give it room "
                   f"(count) for about {needed}", needed)


class TimedSends(Sends):
    """The sends of a closed loop that ends by time: a send due at or after ``duration_s``
    is never made (its client stops), so the run ends once the requests out then are
    answered. The engine holds room for ``count`` sends; one more raises
    :class:`SendsExceeded`. A run with room to spare is the same run, so what it sends does
    not depend on the room."""

    def __init__(self, load: ClosedLoop, times: list):
        self.until, self.clients, self.stopped = load.duration_s, load.clients, 0
        super().__init__(load, times)

    @property
    def done(self) -> bool:
        return self.stopped == self.clients  # every client's next send fell at or after the end

    def answered(self, at: float, count: int, arrived: int) -> None:
        for _ in range(count):
            self.add(at + self.overhead + self.think(), arrived)

    def add(self, at: float, arrived: int) -> None:
        if at >= self.until:
            self.stopped += 1
            return
        if self.created == self.limit:
            raise SendsExceeded.at(self.limit, at, self.until, self.clients)
        super().add(at, arrived)


ARRIVALS = ("poisson", "constant")


@dataclass(frozen=True)
class RequestRate(ClosedLoop):
    """perf_analyzer's request-rate mode with a cap on outstanding requests: sends are due
    at ``rate`` per second (``poisson``: exponential gaps; ``constant``: one every
    ``1/rate``, the first one gap after 0), but at most ``clients`` requests (the cap, M)
    are out at once. A send due while M are out goes when one of them is answered (plus
    ``client_overhead_s``, the time a client holds a request outside the server); the
    schedule itself is kept, so the sends after a late one are not moved, and go at once
    when their time has passed (perf_analyzer sends a late request as soon as it can and
    counts it as delayed). Send ``i`` is therefore at ``max(due_i, free_i)``, ``free_i``
    the ``(i - M)``-th earliest moment a slot frees (0 for the first M). It is a closed
    loop whose M clients send the next request due instead of thinking, so the engine
    serves it as one (:class:`Sends` and :class:`RateSends` answer to it alike).

    The latency a client sees runs from the actual send, as perf_analyzer measures it, not
    from the due time (a request held back by the cap does not count its wait)."""

    rate: float = 1.0
    arrival: str = "poisson"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (np.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"request rate: rate must be a finite number > 0, got {self.rate!r}")
        if self.arrival not in ARRIVALS:
            raise ValueError(f"request rate: arrival must be one of {ARRIVALS}, got {self.arrival!r}")
        if self.think != ThinkTime():
            raise ValueError("request rate: its clients never think (the schedule says when they send)")
        if self.duration_s is not None:
            raise ValueError("request rate: its schedule has a count of requests, not a duration_s")

    @property
    def source(self) -> str:
        return (f"request rate: {self.arrival} {self.rate:g} req/s, at most {self.clients} outstanding, "
                f"{self.count} requests of {self.size} item(s)")

    def schedule(self) -> np.ndarray:
        """When each send is due (seconds, ascending), drawn from ``seed``."""
        if self.arrival == "constant":
            return np.arange(1, self.count + 1) / self.rate
        return np.cumsum(np.random.default_rng(self.seed).exponential(1.0 / self.rate, self.count))

    def sends(self, times: list) -> "RateSends":
        return RateSends(self, times)


class RateSends:
    """A request-rate load's sends during one run, kept in ``times`` as :class:`Sends`
    keeps a closed loop's. ``free`` holds, in order, when each send from ``base`` on may
    go: the earliest moments slots free (an answer plus the overhead) not yet taken by a
    routed send. An answer told later may free its slot earlier than one told before (a
    batch on another replica): it then takes its place in ``free``, and the sends after it
    move earlier, never later. None of them has been routed: each is later than the slot
    it waits for, and an answer is told as its batch starts, no earlier than now."""

    def __init__(self, load: RequestRate, times: list):
        self.times, self.limit, self.overhead = times, load.count, load.client_overhead_s
        self.due = load.schedule().tolist()
        self.free = [0.0] * min(load.clients, load.count)  # the first M sends wait for no slot
        self.base = 0
        times[:len(self.free)] = self.due[:len(self.free)]
        self.created = len(self.free)

    @property
    def done(self) -> bool:
        """Whether every send of the schedule was made (else the loop stalled)."""
        return self.created == self.limit

    def answered(self, at: float, count: int, arrived: int) -> None:
        """``count`` requests are answered at ``at``: their slots free ``client_overhead_s``
        later, and the sends waiting for a slot take the earliest ones."""
        free = self.free
        if arrived > self.base:  # slots taken by routed sends are spent
            del free[:arrived - self.base]
            self.base = arrived
        freed = at + self.overhead
        first = len(free)
        for _ in range(count):
            slot = bisect.bisect_right(free, freed)
            if self.base + len(free) >= self.limit:  # every send has a slot: keep the earliest
                if slot == len(free):
                    break
                free.pop()
            free.insert(slot, freed)
            first = min(first, slot)
        times, due, base = self.times, self.due, self.base
        for k in range(first, len(free)):
            times[base + k] = max(due[base + k], free[k])
        self.created = base + len(free)
