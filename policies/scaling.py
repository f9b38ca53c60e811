"""Adapters: the autoscaling and variant-selection policies the cluster engine calls.

Each is an :class:`~policies.autoscaling.Adapter`: every ``interval_s`` it sees a
:class:`~policies.autoscaling.ClusterObservation` and returns a new plan or ``None``.
They hold only plain numbers (capacity tables, latency and throughput per batch) that
the experiment reads off the measured profile, never the profile itself, so a policy
cannot peek at anything a deployed system would not know.

* :class:`InfAdapterPolicy` — InfAdapter: a *set* of variants and their cores, by the
  program of :mod:`policies.infadapter`, every 30 s, following a falling prediction
  only after ``stabilization`` consecutive lower ones.
* :class:`ExitAwareInfAdapter` — InfAdapter planning each variant served with exits
  at the capacity its observed exit mix frees.
* :class:`ModelSwitching` — MS+ (InfAdapter's baseline): the one variant, with the
  fewest cores that carry the predicted load, that maximises the same objective.
* :class:`VPA` — the Kubernetes VPA for one variant: cores = the P90 of a decaying
  histogram of used cores + 15%, applied by recreating the replica.
* :class:`HPA` — the Kubernetes HPA for one deployment: replicas = ceil(replicas ×
  utilisation / target), left alone within a 10% tolerance, scaled down to the highest
  recommendation of the last 5 minutes.
* :class:`IPAPolicy` — IPA: per stage a variant, batch and replicas, by the program of
  :mod:`policies.ipa`, every 10 s; with ``fix_variant`` it is FA2 (scale and batch
  only), with ``fix_replicas`` RIM (variant switching on fixed replicas).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Mapping, Optional, Sequence

import numpy as np

from . import infadapter, ipa
from .autoscaling import ClusterObservation, Deployment, Plan
from .predictors import LoadPredictor


def _deployments(observation: ClusterObservation, task: str) -> tuple[Deployment, ...]:
    return tuple(observation.plan.tasks[task])


def _deployment_of(observation: ClusterObservation, task: str, variant: str) -> Deployment:
    """The one deployment of ``variant`` in the plan in force (what VPA and HPA scale)."""
    found = [d for d in _deployments(observation, task) if d.variant == variant]
    if len(found) != 1:
        raise ValueError(f"task {task!r}: the plan in force runs {len(found)} deployments of {variant!r}; "
                         f"this adapter scales exactly one")
    return found[0]


def _cores_by_variant(observation: ClusterObservation, task: str, names: Sequence[str]) -> tuple[int, ...]:
    """Cores each of ``names`` has in the plan in force."""
    cores = {name: 0 for name in names}
    for d in _deployments(observation, task):
        cores[d.variant] = cores.get(d.variant, 0) + d.total_cores
    return tuple(cores[name] for name in names)


def _allocation_plan(task: str, variants: Sequence[infadapter.Variant], allocation: infadapter.Allocation) -> Plan:
    """One replica per variant with cores, its quota the load the program sent it (by
    cores where the program sent nothing anywhere, e.g. at zero predicted load)."""
    chosen = [(v, n, q) for v, n, q in zip(variants, allocation.cores, allocation.quotas) if n > 0]
    by_quota = sum(q for _, _, q in chosen) > 0
    return Plan({task: tuple(Deployment(v.name, 1, cores=n, quota=q if by_quota else n) for v, n, q in chosen)})


@dataclass
class _VariantSet:
    """What InfAdapter and MS+ share: ``task``'s ``variants`` with their capacity tables
    up to ``budget`` cores, InfAdapter's objective weights, and ``predictor`` for λ̂."""

    task: str
    variants: tuple[infadapter.Variant, ...]
    budget: int
    predictor: LoadPredictor
    interval_s: float = 30.0
    alpha: float = 0.05
    beta: float = 0.001
    min_cores: int = 2

    def _problem(self, observation: ClusterObservation) -> Optional[infadapter.AllocationProblem]:
        """This decision's program, or ``None`` while no load is predicted."""
        load = self.predictor.predict(observation.counts)
        if not load > 0:
            return None
        current = _cores_by_variant(observation, self.task, [v.name for v in self.variants])
        return infadapter.AllocationProblem(self.variants, load, self.budget, current, self.min_cores,
                                            self.alpha, self.beta)


@dataclass
class InfAdapterPolicy(_VariantSet):
    """InfAdapter: the program's optimum for λ̂; when λ̂ falls below the load the plan
    in force was made for, only after ``stabilization`` consecutive lower predictions
    (InfAdapter's STABILIZATION_INTERVAL), so a dip does not shed capacity a burst needs."""

    stabilization: int = 4
    _lower: int = field(default=0, init=False)
    _planned_for: Optional[float] = field(default=None, init=False)

    def decide(self, observation: ClusterObservation) -> Optional[Plan]:
        problem = self._problem(observation)
        if problem is None:
            return None
        if self._planned_for is not None and problem.load < self._planned_for:
            self._lower += 1
            if self._lower < self.stabilization:
                return None
        self._lower, self._planned_for = 0, problem.load
        return _allocation_plan(self.task, self.variants, infadapter.solve(problem))


@dataclass
class ExitAwareInfAdapter(InfAdapterPolicy):
    """InfAdapter that sizes for the capacity early exits free.

    InfAdapter's capacity tables are load tests of each variant run whole. A variant
    served with exits leaves part of its requests early and, under ``compute_saving``,
    serves more per core; how much depends on the exit mix, which drifts with the inputs.
    So each decision takes the latest mix the deployment reported
    (:class:`ClusterObservation` ``exits``) and scales the variant's capacity by
    ``plain / Σ share_k · to_exit_k``: its whole model's time at batch 1 over the mean time
    a request spends to its exit (``exit_costs[variant] = (plain, to_exit)``, seconds).
    Scaling capacity by the mean speed-up is exact for a server whose every service time
    shrinks k times (it meets the same SLO at a rate at least k times higher); a mix of
    exits is not that (a request that runs to the end still takes the whole model), so it
    is an approximation that holds where the SLO is many service times long and queueing,
    driven by the mean, dominates the tail. A mix that leaves late makes the factor below
    1 (the ramps cost without saving). Until a variant has reported a mix it is planned as
    the whole model."""

    exit_costs: Mapping[str, tuple[float, tuple[float, ...]]] = field(default_factory=dict)
    _mix: dict[str, tuple[float, ...]] = field(default_factory=dict, init=False)

    def speedup(self, variant: str) -> float:
        if variant not in self.exit_costs or variant not in self._mix:
            return 1.0
        plain, to_exit = self.exit_costs[variant]
        return plain / float(np.dot(self._mix[variant], to_exit))

    def _problem(self, observation: ClusterObservation) -> Optional[infadapter.AllocationProblem]:
        for (task, variant, _), shares in observation.exits.items():
            if task == self.task:
                self._mix[variant] = shares
        problem = super()._problem(observation)
        if problem is None:
            return None
        freed = tuple(replace(v, capacity=tuple(int(c * self.speedup(v.name)) for c in v.capacity))
                      for v in self.variants)
        return replace(problem, variants=freed)


@dataclass
class ModelSwitching(_VariantSet):
    """MS+: one variant at a time, with the least cores (at least ``min_cores``) whose
    capacity carries λ̂, the one maximising InfAdapter's objective; when none carries
    it, the variant that carries the most on the whole budget."""

    def decide(self, observation: ClusterObservation) -> Optional[Plan]:
        problem = self._problem(observation)
        if problem is None:
            return None
        options = []
        for m, variant in enumerate(self.variants):
            enough = [n for n in range(self.min_cores, self.budget + 1) if variant.capacity[n] >= problem.load]
            cores = [0] * len(self.variants)
            cores[m] = enough[0] if enough else self.budget
            options.append(infadapter.evaluate(problem, cores))
        carrying = [a for a in options if a.feasible]
        best = (max(carrying, key=lambda a: a.objective) if carrying
                else max(options, key=lambda a: sum(a.quotas)))
        return _allocation_plan(self.task, self.variants, best)


@dataclass
class VPA:
    """The Kubernetes VPA for ``variant`` of ``task`` (one replica): every
    ``interval_s`` a sample of its busy cores joins a histogram whose weights halve
    every ``half_life_s``; the target is the ``percentile`` of it times 1 + ``margin``,
    rounded up and clipped to [``min_cores``, ``max_cores``]; a new target is applied by
    recreating the replica (``Plan.restart``), as the VPA's updater evicts the pod."""

    task: str
    variant: str
    interval_s: float = 30.0
    percentile: float = 0.9
    margin: float = 0.15
    half_life_s: float = 24 * 3600.0
    min_cores: int = 2
    max_cores: int = 20
    _samples: list = field(default_factory=list, init=False)

    def decide(self, observation: ClusterObservation) -> Optional[Plan]:
        current = _deployment_of(observation, self.task, self.variant)
        used = observation.busy_cores.get((self.task, self.variant, current.cores), 0.0)
        self._samples.append((observation.now, used))
        times, values = (np.array(x) for x in zip(*self._samples))
        weights = 0.5 ** ((observation.now - times) / self.half_life_s)
        order = np.argsort(values, kind="stable")
        cumulative = np.cumsum(weights[order]) / weights.sum()
        target = values[order][int(np.searchsorted(cumulative, self.percentile))]
        cores = min(self.max_cores, max(self.min_cores, math.ceil(target * (1 + self.margin) - 1e-9)))
        if cores == current.cores:
            return None
        return Plan({self.task: (Deployment(self.variant, 1, cores=cores, batch=current.batch),)}, restart=True)


@dataclass
class HPA:
    """The Kubernetes HPA for ``variant`` of ``task``: utilisation = busy cores / ready
    cores; desired = ceil(replicas × utilisation / ``target``), unchanged while the
    ratio is within ``tolerance`` of 1; scaling down goes only to the highest
    recommendation of the last ``stabilization_s``; clipped to [``min_replicas``,
    ``max_replicas``]."""

    task: str
    variant: str
    target: float = 0.7
    interval_s: float = 15.0
    tolerance: float = 0.1
    stabilization_s: float = 300.0
    min_replicas: int = 1
    max_replicas: int = 20
    _recent: deque = field(default_factory=deque, init=False)

    def decide(self, observation: ClusterObservation) -> Optional[Plan]:
        current = _deployment_of(observation, self.task, self.variant)
        key = (self.task, self.variant, current.cores)
        ready = observation.ready.get(key, 0)
        desired = current.replicas
        if ready:
            ratio = observation.busy_cores.get(key, 0.0) / (ready * current.cores) / self.target
            if abs(ratio - 1) > self.tolerance:
                desired = math.ceil(current.replicas * ratio - 1e-9)
        desired = min(self.max_replicas, max(self.min_replicas, desired))
        self._recent.append((observation.now, desired))
        while self._recent[0][0] < observation.now - self.stabilization_s:
            self._recent.popleft()
        if desired < current.replicas:
            desired = min(current.replicas, max(r for _, r in self._recent))
        if desired == current.replicas:
            return None
        return Plan({self.task: (Deployment(self.variant, desired, cores=current.cores, batch=current.batch),)})


@dataclass
class IPAPolicy:
    """IPA over ``stages`` (menus with p99 latency and throughput per batch) under the
    end-to-end ``sla`` (s); keeps the plan in force when the program is infeasible."""

    stages: tuple[ipa.Stage, ...]
    sla: float
    predictor: LoadPredictor
    interval_s: float = 10.0
    alpha: float = 2.0
    beta: float = 1.0
    gamma: float = 1e-6
    accuracy_method: str = "sum"
    fix_variant: Optional[tuple[Optional[str], ...]] = None
    fix_replicas: Optional[tuple[Optional[int], ...]] = None

    def decide(self, observation: ClusterObservation) -> Optional[Plan]:
        load = self.predictor.predict(observation.counts)
        config = ipa.solve(ipa.PipelineProblem(self.stages, load, self.sla, self.alpha, self.beta, self.gamma,
                                               self.accuracy_method, fix_variant=self.fix_variant,
                                               fix_replicas=self.fix_replicas))
        if config is None:
            return None
        return Plan({stage.name: (Deployment(c.variant, c.replicas, cores=c.cores // c.replicas, batch=c.batch),)
                     for stage, c in zip(self.stages, config.stages)})
