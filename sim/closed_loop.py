"""Closed-loop load: clients that wait for their answer before they send again.

An open-loop trace fixes every arrival in advance. A closed loop's arrivals do not exist
until the server answers: each of ``clients`` clients sends a request of ``size`` items,
waits for its answer, spends its costs outside the server (fixed, :class:`ClientCosts`, or
drawn per request from measured samples, :class:`ClientSamples`) and a think time drawn
from ``think``, then sends again, until ``count`` requests have been sent or, with
``duration_s``, until its next send would fall at or after that moment.
perf_analyzer's concurrency mode (``--concurrency-range N``) is ``clients=N`` with no
think time; a Locust or wrk user population with think times is the rest.

The engine (:mod:`sim.cluster`) takes such arrivals from :class:`Sends`, told of each
batch's answers as the batch starts (its end is known then): every send known and not
yet routed sits, in time order, where the engine reads arrival times, so lazy routing
reads the next arrival as it does a trace's. Clients are alike (one size, one think-time
law, one law of client costs), so an answer need not say whose it was: each answer makes
one send.

Client costs drawn from samples (:class:`ClientSamples`). Request id ``k`` draws row
``rows[k]`` of the measured table (:meth:`ClientSamples.rows`: with replacement, from the
run's seed, so the same config and seed give the same run). A request's costs are its
``send`` and ``network`` before it reaches the server and its ``recv`` after its answer,
so between an answer and the next send's arrival its client spends the answer's ``recv``,
a think time, and the next request's ``send + network``. The engine knows neither whose
answer it is told nor the id a send will get (ids follow arrival times, which these costs
decide), so it charges the *a*-th answer it is told with ``recv`` of ``rows[a]`` and the
*c*-th send it makes with ``send + network`` of ``rows[c]``; the clients' view
(:mod:`sim.client_view`) charges request ``k`` with all of ``rows[k]``. What is exact and
what is only equal in distribution:

* a request's ``recv`` is the one that delayed its client's next send whenever answers
  are told in id order: always with one replica (any number of instances: its batches
  take the oldest requests first); across replicas with queues of their own, equal in
  distribution;
* a request's ``send + network`` is the one that placed its arrival whenever sends reach
  the server in the order they were made: always with one client; with several, a send
  made later that overtakes one made before (a long draw on the earlier one) trades draws
  with it, so each is equal in distribution only;
* over a whole run the engine used exactly the draws the view reports (rows ``0..sent``
  for the sends; for the answers the same but the last ones, which make no send), so the
  mean costs agree and Little's law holds up to the run's ends, as with fixed costs.

Fixed costs (:class:`ClientCosts`) are charged as before samples existed: their sum after
each answer, nothing before a client's first send (in a closed loop only the cycle's
length matters, not where in it the client's part falls).

A loop that ends by time (:class:`TimedSends`) does not know in advance how many requests
it sends, and the engine holds room for ``count`` of them: its ``count`` is that room, and
a loop that would send more raises :class:`SendsExceeded`, which says how much room a run
again would need (``experiments.runner`` runs it again with that much).
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Union

import numpy as np

from .errors import SimulationError

THINK_KINDS = ("zero", "fixed", "exponential")
BLOCK = 4096  # think times (and sampled client costs) drawn at a time (a draw then costs a list pop)
CLIENT_PARTS = ("send_s", "network_s", "recv_s")
# the spawn key that makes the client costs' stream from the run's seed (the think times
# use the seed itself), so adding samples to a load leaves its think times as they were
CLIENT_STREAM = 1


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

    def drawn(self, seed, n: int) -> tuple[float, float, float]:
        """``send_s, network_s, recv_s`` of every request: the same for all (the
        :meth:`ClientSamples.drawn` of fixed costs)."""
        return self.send_s, self.network_s, self.recv_s

    def pacer(self, think: Callable[[], float], seed) -> "FixedPacer":
        return FixedPacer(self.total_s, think)


@dataclass(frozen=True, eq=False)
class ClientSamples:
    """A client's costs per request outside the server as a measured distribution: row
    ``i`` of ``send_s``, ``network_s`` and ``recv_s`` (seconds, split as
    :class:`ClientCosts` splits them) is one measured request's. Each simulated request
    draws a row with replacement (:meth:`rows`), so the rare long delay a real client has
    (a thread woken late) comes as often as it was measured, and can set clients that the
    fixed mean keeps in step out of step (see the module docstring for what is exact).
    ``source`` says where the rows came from (a file, a measurement)."""

    send_s: np.ndarray
    network_s: np.ndarray
    recv_s: np.ndarray
    source: str = "measured samples"

    def __post_init__(self) -> None:
        sizes = set()
        for name in CLIENT_PARTS:
            column = np.array(getattr(self, name), dtype=np.float64)  # a copy of its own, made read-only
            if column.ndim != 1 or not np.all(np.isfinite(column)) or np.any(column < 0):
                raise ValueError(f"client samples: {name} must be a list of finite numbers >= 0")
            column.flags.writeable = False
            object.__setattr__(self, name, column)
            sizes.add(column.size)
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError(f"client samples: send_s, network_s and recv_s need one value per measured request, "
                             f"as many of each and at least one (got {sorted(sizes)})")

    def __len__(self) -> int:
        return int(self.send_s.size)

    @property
    def total_s(self) -> float:
        """The mean of a request's costs (their sum): a client's mean time per request
        outside the server."""
        return float((self.send_s + self.network_s + self.recv_s).mean())

    def mean(self) -> ClientCosts:
        """Fixed costs with the samples' means."""
        return ClientCosts(*(float(getattr(self, name).mean()) for name in CLIENT_PARTS))

    def blocks(self, seed) -> Iterator[np.ndarray]:
        """The rows that request ids draw, :data:`BLOCK` ids at a time, from ``seed``'s
        client stream (:data:`CLIENT_STREAM`): the first ``n`` are the same however many
        are drawn after them (a loop that ends by time is the same run whatever its room)."""
        base = np.random.default_rng(seed).bit_generator.seed_seq  # (reading it spawns nothing)
        rng = np.random.default_rng(np.random.SeedSequence(base.entropy, spawn_key=(*base.spawn_key, CLIENT_STREAM),
                                                           pool_size=base.pool_size))
        while True:
            yield rng.integers(0, len(self), BLOCK)

    def rows(self, seed, n: int) -> np.ndarray:
        """The row each of request ids ``0..n-1`` draws."""
        blocks = itertools.islice(self.blocks(seed), -(-n // BLOCK))
        return np.concatenate([np.empty(0, dtype=np.int64), *blocks])[:n]

    def drawn(self, seed, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``send_s, network_s, recv_s`` of request ids ``0..n-1``, as drawn from ``seed``."""
        rows = self.rows(seed, n)
        return self.send_s[rows], self.network_s[rows], self.recv_s[rows]

    def pacer(self, think: Callable[[], float], seed) -> "DrawnPacer":
        return DrawnPacer(self, think, seed)


class FixedPacer:
    """When a client with fixed costs sends: its first request after a think time, each
    next one its costs' sum and a think time after an answer (the float sums as they were
    before samples existed, so a run with fixed costs is unchanged)."""

    def __init__(self, overhead: float, think: Callable[[], float]):
        self.overhead, self.think = overhead, think

    def first(self, send: int) -> float:
        return self.think()

    def again(self, at: float, send: int) -> float:
        return at + self.overhead + self.think()


class DrawnPacer:
    """When a client with sampled costs sends (module docstring): the ``send``-th send
    made arrives its row's ``send + network`` after its client begins, which is a think
    time after the start for a first request, and an answer's ``recv`` and a think time
    after that answer later (the answers counted in the order they are told). Draws are
    held as lists of floats, :data:`BLOCK` ids more at a time."""

    def __init__(self, samples: ClientSamples, think: Callable[[], float], seed):
        self.think, self.samples = think, samples
        self.source = samples.blocks(seed)
        self.before: list[float] = []  # per send made: send + network
        self.after: list[float] = []  # per answer told: recv
        self.told = 0

    def first(self, send: int) -> float:
        return self.think() + self.reach(send)

    def again(self, at: float, send: int) -> float:
        told = self.told
        self.told = told + 1
        reach = self.reach(send)  # (sends made >= answers told: this draws far enough for both)
        return at + self.after[told] + self.think() + reach

    def reach(self, send: int) -> float:
        while send >= len(self.before):
            rows = next(self.source)
            samples = self.samples
            self.before.extend((samples.send_s[rows] + samples.network_s[rows]).tolist())
            self.after.extend(samples.recv_s[rows].tolist())
        return self.before[send]


Costs = Union[ClientCosts, ClientSamples]


@dataclass(frozen=True)
class ClosedLoop:
    """The closed-loop load of a run: ``clients`` clients of ``size`` items per request,
    ``count`` requests in all; with ``duration_s``, as many as the clients send before that
    moment (the requests out then are answered; ``count`` is then only the room the engine
    holds, see the module docstring). ``client``: a client's measured costs per request
    outside the server, fixed (:class:`ClientCosts`) or drawn from samples
    (:class:`ClientSamples`). ``seed`` (anything :func:`numpy.random.default_rng` takes)
    seeds the think times and the drawn costs, so a run is the same each time it is
    served."""

    clients: int
    count: int
    think: ThinkTime = field(default_factory=ThinkTime)
    size: int = 1
    client: Costs = field(default_factory=ClientCosts)
    seed: object = 0
    duration_s: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ("clients", "count", "size"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"closed loop: {name} must be a whole number >= 1, got {value!r}")
        if self.duration_s is not None and not (np.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(f"closed loop: duration_s must be a finite number > 0, got {self.duration_s!r}")
        if self.seed is None and isinstance(self.client, ClientSamples):  # the clients' view draws them again
            raise ValueError("closed loop: client costs drawn from samples need a seed (the clients' view draws "
                             "each request's again, as the engine did)")

    @property
    def client_overhead_s(self) -> float:
        """A client's time per request outside the server (its mean, for sampled costs):
        what the engine waits between an answer and the next send's arrival, think time
        apart."""
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
        self.times, self.limit = times, load.count
        pacer = load.client.pacer(load.think.sampler(np.random.default_rng(load.seed)), load.seed)
        self.first, self.again = pacer.first, pacer.again
        self.created = 0
        for _ in range(min(load.clients, load.count)):  # each client thinks, then sends its first request
            self.add(self.first(self.created), 0)

    @property
    def done(self) -> bool:
        """Whether the clients sent all they were to send (else the loop stalled)."""
        return self.created == self.limit

    def answered(self, at: float, count: int, arrived: int) -> None:
        """``count`` requests are answered at ``at``: their clients send again after their
        costs and a think time each, while requests are left to send."""
        again = self.again
        for _ in range(min(count, self.limit - self.created)):
            self.add(again(at, self.created), arrived)

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
        again = self.again
        for _ in range(count):
            self.add(again(at, self.created), arrived)

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
        if not isinstance(self.client, ClientCosts):
            raise ValueError("request rate: its client costs are fixed (drawn costs are a closed loop's, whose clients "
                             "each wait for their own answer)")

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
