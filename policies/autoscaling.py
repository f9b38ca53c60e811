"""What an autoscaler decides and what it sees: plans, deployments, observations.

A serving cluster runs each *task* of a pipeline (one model, e.g. a detector) as one or
more *deployments*: a variant of the task's model (ResNet-18 or ResNet-152), its
replicas, the cores each replica has and the batch each replica forms. An *adapter*
(InfAdapter, IPA, the HPA/VPA-like baselines) is called every ``interval_s`` seconds with
a :class:`ClusterObservation` — the load seen so far, the current plan, how busy each
deployment was — and returns a new :class:`Plan` or ``None`` to keep the current one.
The engine (:mod:`sim.cluster`) carries the plan out: provisioning takes a model's load
time, and no queued request is lost when a deployment goes away.

Pure data and protocols; no SimPy here, so the same adapters could drive a real cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Protocol

import numpy as np


@dataclass(frozen=True)
class Deployment:
    """``replicas`` replicas of ``variant``, each with ``cores`` cores, forming batches of
    up to ``batch``; ``quota`` is this deployment's share of its task's requests (weights,
    normalised over the task's deployments: InfAdapter splits load across variants so)."""

    variant: str
    replicas: int
    cores: int = 1
    batch: int = 1
    quota: float = 1.0

    def __post_init__(self):
        for name in ("replicas", "cores", "batch"):
            value = getattr(self, name)
            if int(value) != value or value < (0 if name == "replicas" else 1):
                raise ValueError(f"deployment {self.variant!r}: {name} must be a whole number "
                                 f">= {0 if name == 'replicas' else 1}, got {value!r}")
        if not self.quota >= 0:
            raise ValueError(f"deployment {self.variant!r}: quota must be >= 0, got {self.quota!r}")

    @property
    def total_cores(self) -> int:
        return self.replicas * self.cores


@dataclass(frozen=True)
class Plan:
    """Per task, its deployments. ``restart``: carry the plan out by recreating replicas
    whose size changes at once (the Kubernetes VPA's way: the old pod goes before the new
    one has loaded), instead of the default rolling change (old replicas stay until the
    new ones are ready)."""

    tasks: Mapping[str, tuple[Deployment, ...]]
    restart: bool = False

    def __post_init__(self):
        for task, deployments in self.tasks.items():
            keys = [(d.variant, d.cores) for d in deployments]
            if len(set(keys)) != len(keys):
                raise ValueError(f"plan: task {task!r} lists a (variant, cores) deployment twice: {keys}")
            serving = [d for d in deployments if d.replicas and d.quota > 0]
            if not serving:
                raise ValueError(f"plan: task {task!r} has no deployment with replicas and a quota > 0")

    def cores(self, task: Optional[str] = None) -> int:
        """Cores the plan provisions (for one task, or all)."""
        tasks = self.tasks if task is None else {task: self.tasks[task]}
        return sum(d.total_cores for deployments in tasks.values() for d in deployments)


@dataclass(frozen=True)
class ClusterObservation:
    """What a deployed autoscaler can know at ``now``: the per-second arrival counts at
    the pipeline so far (``counts[i]`` = second i), the plan in force, and per
    (task, variant, cores) deployment the mean busy cores and the ready replicas over the
    last ``window_s`` seconds — never a future arrival. ``exits``: for a deployment of a
    variant with exits that answered requests in that window, the share answered at each
    of its exits (what a server with exits can count: where requests left, not whether
    they were right), so an adapter can size for the capacity early exits free."""

    now: float
    counts: np.ndarray
    plan: Plan
    busy_cores: Mapping[tuple[str, str, int], float] = field(default_factory=dict)
    ready: Mapping[tuple[str, str, int], int] = field(default_factory=dict)
    window_s: float = 0.0
    exits: Mapping[tuple[str, str, int], tuple[float, ...]] = field(default_factory=dict)


class Adapter(Protocol):
    """Called every ``interval_s`` seconds of simulated time."""

    interval_s: float

    def decide(self, observation: ClusterObservation) -> Optional[Plan]:
        """A new plan, or ``None`` to keep the one in force."""


@dataclass
class StaticAdapter:
    """Never changes anything: the plan it starts with is the plan it keeps."""

    interval_s: float = 3600.0

    def decide(self, observation: ClusterObservation) -> Optional[Plan]:
        return None
