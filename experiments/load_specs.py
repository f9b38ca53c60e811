"""What a YAML file's ``load:`` may name: load that is not a trace known in advance.

``load: {kind: closed_loop, ...}`` stands instead of ``trace:``: clients that wait for
their answers (:mod:`sim.closed_loop`), perf_analyzer's concurrency mode. Sweeping
``load.clients`` is a concurrency sweep in one experiment. ``load: {kind: request_rate,
...}`` is perf_analyzer's request-rate mode with a cap on the requests outstanding.

A client's costs outside the server (``client:``) are measured figures, in one of three
ways: constants in ms; ``from_profile``, read from what ``servesim profile import --format
perf-analyzer`` kept of perf_analyzer's rows (:func:`workloads.offline_tables.request_costs`)
at the load's request size; or ``{samples: PATH}``, a file of measured requests
(:mod:`workloads.client_samples`, which ``servesim profile-served --whole`` writes), from
which each simulated request draws its own (:class:`~sim.closed_loop.ClientSamples`). The
same profile's compute input / infer / output, where it has them, split the simulated
compute in the clients' view (:func:`compute_split`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from servesim.sim.client_view import ComputeSplit
from servesim.sim.closed_loop import ClientCosts, ClientSamples, ClosedLoop, Costs, RequestRate, ThinkTime
from servesim.traces import _checks
from servesim.workloads.client_samples import CLIENT_COLUMNS, read_client_samples
from servesim.workloads.offline_tables import COMPUTE_PARTS, REQUEST_PARTS, request_costs
from servesim.workloads.profile import Profile

from .registry import LOADS
from .specs import MAX_BATCH, Spec

# The most clients a closed loop may have: a send is placed among the sends not yet
# routed (at most one per client) by shifting them, so a larger population is slow, and
# no load generator drives one.
MAX_CLIENTS = 100_000
# The longest a client's fixed overhead or mean think time may be: an hour, far above any
# measured round trip; a larger value is a typo (seconds for milliseconds).
MAX_PAUSE_MS = 3.6e6
# The longest a closed loop may send for: a day of simulated time.
MAX_DURATION_S = 86_400.0
# The room a loop that ends by time is first given (sends the engine holds); a loop that
# sends more is run again with room for what its rate so far needs (sim.closed_loop.SendsExceeded).
FIRST_ROOM = 65_536
# The client's parts of a perf_analyzer row, by the metadata key a perf-analyzer import keeps them under.
CLIENT_PARTS = {"send_s": REQUEST_PARTS["client_send"], "network_s": REQUEST_PARTS["network"],
                "recv_s": REQUEST_PARTS["client_recv"]}
FROM_PROFILE = "from_profile"


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


class Client(Spec):
    """A client's measured costs per request outside the server, in ms, as perf_analyzer
    splits them: ``send_ms`` (Client Send), ``network_ms`` (Network+Server Send/Recv),
    ``recv_ms`` (Client Recv). Each delays the client's next send and adds to the latency
    it sees. Exactly one source: the three constants; ``client: from_profile``, read from
    the model's profile (a perf_analyzer import) at the load's request size; or
    ``samples: PATH`` (relative to the YAML), a file of measured requests
    (:mod:`workloads.client_samples`) from which each request draws its own three."""

    send_ms: NonNegativeFloat = Field(default=0.0, le=MAX_PAUSE_MS)
    network_ms: NonNegativeFloat = Field(default=0.0, le=MAX_PAUSE_MS)
    recv_ms: NonNegativeFloat = Field(default=0.0, le=MAX_PAUSE_MS)
    from_profile: bool = False
    samples: Optional[str] = Field(default=None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _named(cls, data):
        if isinstance(data, str):
            if data != FROM_PROFILE:
                raise ValueError(f"expected {FROM_PROFILE!r}, {{send_ms, network_ms, recv_ms}} or {{samples: PATH}}, "
                             f"got {data!r}")
            return {"from_profile": True}
        return data

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("send_ms", "network_ms", "recv_ms") if getattr(self, k)]  # (a dumped config has 0s)
        if self.from_profile and self.samples is not None:
            raise ValueError(f"samples: the costs come from the profile ({FROM_PROFILE}) or from samples, not both")
        source = FROM_PROFILE if self.from_profile else "samples" if self.samples is not None else None
        if source and given:
            raise ValueError(f"{given[0]}: the costs come from {source} or are given, not both")
        return self

    def build(self, profile: Optional[Profile], size: int, base_dir: Path) -> Costs:
        """The costs of one request of ``size`` items; ``profile`` is the model's (read
        only ``from_profile``), ``base_dir`` the YAML's folder (``samples`` is relative to
        it). A profile without them, or without a measured batch size at or around
        ``size``, or a samples file that cannot be read, is a ValueError of one line."""
        if self.samples is not None:
            path = base_dir / self.samples
            columns, _ = read_client_samples(path)
            return ClientSamples(*(columns[c] / 1e3 for c in CLIENT_COLUMNS), source=str(path))
        if not self.from_profile:
            return ClientCosts(self.send_ms / 1e3, self.network_ms / 1e3, self.recv_ms / 1e3)
        costs = request_costs(profile) if profile is not None else {}
        missing = [key for key in CLIENT_PARTS.values() if key not in costs]
        if missing:
            source = "the model's profile" if profile is None else profile.source
            raise ValueError(f"{FROM_PROFILE}: {source} has no {missing[0]} (per-request costs are kept by "
                             f"`servesim profile import --format perf-analyzer`); give client: {{send_ms, network_ms, "
                             f"recv_ms}} instead")
        return ClientCosts(**{part: _at_size(costs[key], size, key) / 1e3 for part, key in CLIENT_PARTS.items()})


def _at_size(by_batch: dict[int, float], size: int, key: str) -> float:
    """A per-request figure at ``size`` items: measured there, or interpolated linearly
    between the measured sizes around it; outside them it is not known (a request's send
    and receive grow with its size), so refused."""
    sizes = sorted(by_batch)
    if not sizes[0] <= size <= sizes[-1]:
        raise ValueError(f"{FROM_PROFILE}: the profile's {key} is measured at batch sizes {sizes[0]}-{sizes[-1]}, "
                         f"not at load.size {size}")
    return float(np.interp(size, sizes, [by_batch[b] for b in sizes]))


def compute_split(profile: Profile) -> Optional[ComputeSplit]:
    """The compute's input / infer / output shares a perf_analyzer import measured, or
    ``None`` (any other profile: its compute is reported whole)."""
    costs = request_costs(profile)
    keys = list(COMPUTE_PARTS.values())
    if not all(key in costs for key in keys):
        return None
    sizes = sorted(costs[keys[0]])
    return ComputeSplit(tuple(sizes), tuple(tuple(costs[key][b] for b in sizes) for key in keys))


@LOADS.register
class ClosedLoopLoad(Spec):
    """``clients`` clients, each sending a request of ``size`` items, waiting for its
    answer, then spending its ``client`` costs (measured, outside the server) and a
    ``think`` time, until ``count`` requests are sent or, with ``duration_s`` instead, until
    that moment (the requests out then are answered; perf_analyzer measures over windows
    of time)."""

    kind: Literal["closed_loop"]
    clients: PositiveInt = Field(le=MAX_CLIENTS)
    count: Optional[PositiveInt] = Field(default=None, le=_checks.MAX_ARRIVALS)
    duration_s: Optional[PositiveFloat] = Field(default=None, le=MAX_DURATION_S)
    size: PositiveInt = Field(default=1, le=MAX_BATCH)
    think: Think = Field(default_factory=Think)
    client: Client = Field(default_factory=Client)

    @model_validator(mode="after")
    def _count_or_duration(self):
        if (self.count is None) == (self.duration_s is None):
            raise ValueError("count: give one of count (requests in all) and duration_s (seconds of sending)"
                             + (", not both" if self.count is not None else ""))
        return self

    def build(self, seed: np.random.SeedSequence, profile: Optional[Profile] = None,
              room: Optional[int] = None, *, base_dir: Path) -> ClosedLoop:
        """The load of one run, its think times (and drawn client costs) from ``seed`` (the
        run's arrival stream); ``profile`` is the model's (for ``client: from_profile``);
        ``room``: the sends a loop that ends by time is given room for (default
        :data:`FIRST_ROOM`); ``base_dir``: the YAML's folder (for ``client: {samples}``)."""
        count = self.count if self.duration_s is None else max(room or FIRST_ROOM, self.clients + 1)
        return ClosedLoop(self.clients, count, self.think.build(), self.size,
                          self.client.build(profile, self.size, base_dir), seed, self.duration_s)


@LOADS.register
class RequestRateLoad(Spec):
    """``count`` requests of ``size`` items due at ``rate`` per second (``poisson`` or
    ``constant`` gaps), at most ``max_outstanding`` out at once: a send due while that
    many are out waits for an answer (and the client's ``client`` costs), as
    perf_analyzer's request-rate mode delays it (:class:`~sim.closed_loop.RequestRate`)."""

    kind: Literal["request_rate"]
    rate: PositiveFloat
    arrival: Literal["poisson", "constant"] = "poisson"
    max_outstanding: PositiveInt = Field(le=MAX_CLIENTS)
    count: PositiveInt = Field(le=_checks.MAX_ARRIVALS)
    size: PositiveInt = Field(default=1, le=MAX_BATCH)
    client: Client = Field(default_factory=Client)

    @model_validator(mode="after")
    def _fixed_costs(self):
        if self.client.samples is not None:
            raise ValueError("client: a request rate's client costs are fixed (constants or from_profile); drawn "
                             "samples are a closed loop's, whose clients each wait for their own answer")
        return self

    @property
    def clients(self) -> int:
        """The most requests out at once: what a closed loop's clients are (the checks of
        :func:`experiments.runner.validate_runs` read it so)."""
        return self.max_outstanding

    def build(self, seed: np.random.SeedSequence, profile: Optional[Profile] = None,
              room: Optional[int] = None, *, base_dir: Path) -> RequestRate:
        """The load of one run, its schedule drawn from ``seed`` (the run's arrival stream);
        ``profile`` and ``base_dir`` as for a closed loop; ``room`` is a closed loop's only
        (a schedule has its count)."""
        return RequestRate(self.max_outstanding, self.count, size=self.size,
                           client=self.client.build(profile, self.size, base_dir), seed=seed, rate=self.rate,
                           arrival=self.arrival)
