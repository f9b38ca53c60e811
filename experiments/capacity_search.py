"""Capacity search: the highest load that meets an SLO, or the cheapest configuration that does.

``servesim capacity FILE.yaml --slo p99<=10ms [--vary trace.rate | replicas | KEY]``

One axis of the config is varied (:class:`Axis`): the arrival rate (``trace.rate``, or
``trace.scale_rate`` for a trace without one), searched upward for the highest value
meeting the SLO; or a replica or core count, searched downward for the fewest (the
cheapest: cost grows with it). At every probed value the config runs once per seed, the
same seeds at every probe (common random numbers: the same random streams, so
neighbouring probes differ by the varied value more than by chance), and the seeds'
figure is read as a mean with a 95% Student-t interval.

Three yes/no questions are asked of every probe (:data:`CRITERIA`): does the interval's
*upper* end meet the SLO (met with 95% confidence), does the *mean*, does the *lower* end
(not confidently missed). Each has its own boundary, bracketed and bisected with shared
probes (:func:`search`): the answer is the mean's boundary, the band runs from the upper
end's boundary (a value the seeds say meets the SLO) to the lower end's (beyond it they say
it fails). A probe where a seed fell behind its arrivals (summary ``overloaded``), or
whose figure is unbounded, fails all three: it has no finite figure to average.

The figure is computed from each run's request table, not from the summary: a request
that was dropped or rejected counts as infinitely late, so a p99 SLO fails once more than
1% of requests go unanswered (the summary's quantiles cover answered requests only, and a
server shedding load by ``drop_after_ms`` would look fast while it drops).
"""

from __future__ import annotations

import copy
import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from servesim.sim.records import COMPLETED

from . import store
from .config import ConfigError, ExperimentConfig, Run, _is_group, expand, load, point_runs
from .executors import LOCAL, make_executor
from .seeds import ci_half_width
from .runner import attempt, lost, validate_runs
from .cluster_specs import MAX_BUDGET
from .specs import MAX_REPLICAS

# --- the SLO ---------------------------------------------------------------------------

VIOLATIONS = "violations"
_NUMBER = r"(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
_LATENCY = re.compile(rf"(mean|p\d+(?:\.\d+)?)\s*(?:<=|≤)\s*{_NUMBER}\s*(ms|s)", re.IGNORECASE)
_RATE = re.compile(rf"{VIOLATIONS}\s*(?:<=|≤)\s*{_NUMBER}\s*(%?)", re.IGNORECASE)
SLO_FORMS = "p50|p90|p95|p99|pNN.N|mean <= N ms|s (e.g. p99<=50ms, 'p99 <= 0.05s'), or violations <= N% " \
            "(the share of requests later than the config's slo_ms or unanswered)"


@dataclass(frozen=True)
class Slo:
    """What a probe must meet: ``figure`` (``p99``, ``mean`` or ``violations``) at most
    ``limit`` (ms for a latency, a fraction for violations)."""

    figure: str
    limit: float

    @property
    def quantile(self) -> Optional[float]:
        """The percentile of a ``pNN`` figure (99.0 for p99), else None."""
        return float(self.figure[1:]) if self.figure.startswith("p") else None

    @property
    def unit(self) -> str:
        return "" if self.figure == VIOLATIONS else "ms"

    def shown(self, value: Optional[float]) -> str:
        """A figure of this SLO's kind, with its unit."""
        if value is None or not math.isfinite(value):
            return "unbounded"
        return f"{100 * value:.3g}%" if self.figure == VIOLATIONS else f"{value:.4g} ms"

    def __str__(self) -> str:
        return f"{self.figure} <= {self.shown(self.limit)}"


def parse_slo(text: str) -> Slo:
    """``--slo``'s text as an :class:`Slo`, or a one-line ConfigError saying what it takes."""
    spec = text.strip()
    latency, rate = _LATENCY.fullmatch(spec), _RATE.fullmatch(spec)
    if latency:
        figure, number, unit = latency.group(1).lower(), float(latency.group(2)), latency.group(3).lower()
        if figure != "mean" and not 0 < float(figure[1:]) < 100:
            raise ConfigError(f"--slo: the percentile must be between 0 and 100 exclusive (got {text!r})")
        limit = number * (1e3 if unit == "s" else 1.0)
    elif rate:
        figure, number = VIOLATIONS, float(rate.group(1))
        limit = number / 100 if rate.group(2) else number
        if limit >= 1:
            raise ConfigError(f"--slo: a violation rate must be below 100% (got {text!r}; write 1% or 0.01)")
    else:
        raise ConfigError(f"--slo: cannot read {text!r}; it takes {SLO_FORMS}")
    if not 0 < limit < math.inf:
        raise ConfigError(f"--slo: the limit must be a positive finite number (got {text!r})")
    return Slo(figure, limit)


def unanswered_as_late(table: dict[str, np.ndarray]) -> np.ndarray:
    """Each measured request's latency in ms, +inf where it got no answer (dropped or
    rejected); requests flagged ``warmup`` are left out, as the summary leaves them."""
    keep = ~table["warmup"] if "warmup" in table else slice(None)
    latency = (table["finish"] - table["arrival"])[keep] * 1e3
    return np.where(table["status"][keep] == COMPLETED, latency, np.inf)


def quantile(latency: np.ndarray, q: float) -> float:
    """numpy's (linear) percentile ``q`` of ``latency``, where infinite values are the
    largest: +inf once the quantile's position reaches them (numpy would give NaN there)."""
    finite = np.sort(latency[np.isfinite(latency)])
    if not latency.size:
        return math.inf
    position = q / 100 * (latency.size - 1)
    below = math.floor(position)
    if position > finite.size - 1:
        return math.inf
    step = position - below
    upper = finite[min(below + 1, finite.size - 1)]
    return float(finite[below] + step * (upper - finite[below]))


def figure_of(slo: Slo, summary: dict, table: dict[str, np.ndarray]) -> float:
    """One run's figure for ``slo``: ms, or the violation rate (the summary's, which
    counts unanswered requests as violations already)."""
    if slo.figure == VIOLATIONS:
        rate = summary.get("slo_violation_rate")
        return math.inf if rate is None else float(rate)
    latency = unanswered_as_late(table)
    if slo.figure == "mean":
        return float(latency.mean()) if latency.size else math.inf
    return quantile(latency, slo.quantile)


# --- a probe ---------------------------------------------------------------------------

CRITERIA = ("upper", "mean", "lower")  # which end of the seeds' 95% interval must meet the SLO


@dataclass
class Probe:
    """One value of the varied key, run once per seed."""

    value: float
    figures: list[float]  # per seed, in the SLO's unit; inf: unbounded
    overloaded: int  # seeds whose run fell behind its arrivals
    offered_rps: float  # the seeds' mean arrival rate (requests over the arrivals' span)
    cost: Optional[float]  # the summary's cost (single model: accelerator-s; cluster: core-s), mean over seeds
    cost_money: Optional[float]
    order: int = 0  # 1 for the first probe of a search

    @property
    def finite(self) -> bool:
        return not self.overloaded and all(math.isfinite(f) for f in self.figures)

    @property
    def mean(self) -> float:
        return float(np.mean(self.figures)) if self.finite else math.inf

    @property
    def half_width(self) -> float:
        """Half the 95% t-interval of the seeds' mean; 0 with one seed (no interval)."""
        half = ci_half_width(np.asarray(self.figures)) if self.finite else math.nan
        return 0.0 if math.isnan(half) else half

    def meets(self, limit: float) -> dict[str, bool]:
        """Per criterion, whether that end of the interval (or the mean) meets ``limit``."""
        if not self.finite:
            return dict.fromkeys(CRITERIA, False)
        mean, half = self.mean, self.half_width
        return {"upper": mean + half <= limit, "mean": mean <= limit, "lower": mean - half <= limit}

    def verdict(self, limit: float) -> str:
        meets = self.meets(limit)
        if meets["upper"]:
            return "met"
        if meets["mean"]:
            return "met on average"
        if meets["lower"]:
            return "missed on average"
        return "overloaded" if self.overloaded else "missed"


# --- the axis --------------------------------------------------------------------------

RATE, COUNT = "rate", "count"  # what an axis varies: a load (higher is harder) or a size (more is easier)
SIZE_KEYS = ("replicas", "cores")  # the last part of a size key path
VARY_FORMS = ("trace.rate, trace.scale_rate, serving.replicas, replicas (the only deployment of a cluster's "
              "start plan), or cluster.initial.TASK.K.replicas|cores")


@dataclass(frozen=True)
class Axis:
    """The varied key: ``key`` as the user names it, ``path`` the key path it sets
    (``replicas`` resolves to the deployment it means), ``kind`` RATE or COUNT, and
    ``start`` its value in the config."""

    key: str
    path: str
    kind: str
    start: float

    @property
    def most(self) -> int:
        """The largest count the config takes for this key."""
        return MAX_BUDGET if self.path.endswith(".cores") else MAX_REPLICAS

    @property
    def harder(self) -> int:
        """+1 where a larger value is harder to serve (a rate), -1 where easier (a size)."""
        return 1 if self.kind == RATE else -1

    def params(self, data: dict, value: float) -> dict:
        """The sweep-point setting that gives ``path`` the ``value`` in the config ``data``
        (a model dump): ``{path: value}``, or where the path passes a list (a plan's
        deployments) that whole list, changed, under the key that holds it
        (:func:`experiments.config._set`, which sets a point's values, walks mappings only)."""
        value = int(value) if self.kind == COUNT else float(value)
        parts = self.path.split(".")
        node = data
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                changed = copy.deepcopy(node)
                _walk(changed, parts[i:-1])[parts[-1]] = value
                return {".".join(parts[:i]): changed}
            node = node[part]
        return {self.path: value}


def _walk(node, parts: list[str]):
    """What the key path ``parts`` leads to in a model dump (list items by their index)."""
    for part in parts:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def resolve_axis(config: ExperimentConfig, vary: Optional[str], source: str) -> Axis:
    """The axis ``--vary`` names on ``config`` (one sweep point's), or a one-line error."""
    trace = config.trace
    if trace is None and vary in (None, "trace.rate", "trace.scale_rate"):
        raise ConfigError(f"{source}: load: closed-loop clients have no arrival rate to search (their load is "
                          f"'load.clients': sweep it); give --vary replicas")
    has_rate = trace is not None and "rate" in type(trace).model_fields
    if vary is None:
        if not has_rate:
            raise ConfigError(f"{source}: trace.kind: a {trace.kind} trace has no single rate to search; give "
                              f"--vary trace.scale_rate (scales its arrivals) or --vary replicas")
        vary = "trace.rate"
    if vary == "trace.rate":
        if not has_rate:
            raise ConfigError(f"{source}: trace.kind: a {trace.kind} trace has no 'rate' for --vary trace.rate; "
                              f"--vary trace.scale_rate scales its arrivals instead")
        return Axis(vary, vary, RATE, float(trace.rate))
    if vary == "trace.scale_rate":
        return Axis(vary, vary, RATE, float(trace.scale_rate or 1.0))
    path = _size_path(config, vary, source)
    try:
        node = _walk(config.model_dump(mode="json"), path.split("."))
    except (KeyError, IndexError, ValueError, TypeError):
        raise ConfigError(f"{source}: --vary {vary}: {path} is not a key of this config; it takes "
                          f"{VARY_FORMS}") from None
    if not isinstance(node, int) or isinstance(node, bool):
        raise ConfigError(f"{source}: --vary {vary}: {path} is not a count (got {node!r})")
    return Axis(vary, path, COUNT, float(max(node, 1)))  # a deployment may start with 0 replicas


def _size_path(config: ExperimentConfig, vary: str, source: str) -> str:
    """The key path of a replica or core count: ``serving.replicas`` for one model; for a
    cluster under the static adapter, a deployment's ``replicas`` or ``cores`` in its
    start plan (``replicas``: of its only deployment)."""
    cluster = config.cluster
    if cluster is None and vary in ("replicas", "serving.replicas"):
        return "serving.replicas"
    if cluster is not None and vary == "serving.replicas":
        raise ConfigError(f"{source}: --vary serving.replicas: a cluster takes its replicas from its start plan; "
                          f"vary replicas or cluster.initial.TASK.K.replicas")
    if cluster is None or not (vary == "replicas" or vary.rsplit(".", 1)[-1] in SIZE_KEYS and vary.startswith(
            ("cluster.initial.", "cluster.adapter.initial."))):
        raise ConfigError(f"{source}: --vary {vary}: cannot search this key; it takes {VARY_FORMS}")
    if cluster.adapter.name != "static":
        raise ConfigError(f"{source}: cluster.adapter: --vary {vary} sizes the start plan, which the "
                          f"{cluster.adapter.name!r} adapter changes as it runs; search a plan that never changes "
                          f"(adapter: static)")
    key, start = (("cluster.adapter.initial", cluster.adapter.initial) if cluster.adapter.initial is not None
                  else ("cluster.initial", cluster.initial))
    if vary == "replicas":
        deployments = [(task, k) for task, ds in start.items() for k in range(len(ds))]
        if len(deployments) != 1:
            raise ConfigError(f"{source}: --vary replicas: the start plan has {len(deployments)} deployments; name "
                              f"one, e.g. --vary {key}.{deployments[0][0]}.{deployments[0][1]}.replicas")
        task, k = deployments[0]
        return f"{key}.{task}.{k}.replicas"
    if not vary.startswith(key + "."):
        raise ConfigError(f"{source}: --vary {vary}: the run starts from {key}; vary a deployment there")
    return vary


# --- the search ------------------------------------------------------------------------

MAX_DOUBLINGS = 20  # how far a search looks for its first probe on either side of the boundary
MAX_PROBES = 80
FLAT = 0.01  # a step toward the easier side that improves the figure less than this is no progress


class SearchError(ConfigError):
    """The SLO cannot be bracketed (met everywhere, or nowhere) within the search's range."""


@dataclass
class Bracket:
    """One criterion's boundary: ``good``, the probed value closest to it that meets the
    criterion, and ``bad``, the closest that does not (None: not found yet)."""

    good: Optional[float] = None
    bad: Optional[float] = None


@dataclass
class Search:
    """A finished search: every probe in order and each criterion's bracket."""

    axis: Axis
    slo: Slo
    probes: list[Probe] = field(default_factory=list)
    brackets: dict[str, Bracket] = field(default_factory=dict)

    @property
    def answer(self) -> Optional[float]:
        """The highest rate (the fewest replicas) whose seeds' mean meets the SLO."""
        return self.brackets["mean"].good

    @property
    def band(self) -> tuple[Optional[float], Optional[float]]:
        """The boundaries of the interval's upper and lower ends, low to high (None: not
        bracketed, off the searched range): for a rate, (met with 95% confidence up to,
        not confidently missed up to); for a count, the reverse."""
        edges = (self.brackets["upper"].good, self.brackets["lower"].good)
        return edges if self.axis.kind == RATE else edges[::-1]

    def at(self, value: Optional[float]) -> Optional[Probe]:
        return next((p for p in self.probes if p.value == value), None)


def search(axis: Axis, slo: Slo, evaluate: Callable[[float], Probe], rel_tol: float,
           progress: Callable[[Probe], None] = lambda probe: None) -> Search:
    """Bracket then bisect the three boundaries of :data:`CRITERIA` with shared probes.

    A rate is bracketed by doubling up from the config's value until the lower end fails
    and halving down until the upper end meets, then bisected in log space (geometric
    midpoints) until each bracket's ends are within ``rel_tol`` of each other. A count
    starts with 0 as a miss (no replica serves nothing), doubles until the upper end
    meets, and is bisected to adjacent integers. Each probe settles every criterion it
    falls inside the bracket of; the next probe halves the widest open bracket.
    """
    found = Search(axis, slo, brackets={c: Bracket() for c in CRITERIA})
    if axis.kind == COUNT:
        for bracket in found.brackets.values():
            bracket.bad = 0

    def harder(x: float, y: float) -> bool:
        return axis.harder * (x - y) > 0

    def probe(value: float) -> Probe:
        known = found.at(value)
        if known is not None:
            return known
        if len(found.probes) >= MAX_PROBES:
            raise SearchError(f"--vary {axis.key}: no convergence after {MAX_PROBES} probes")
        result = evaluate(value)
        result.order = len(found.probes) + 1
        found.probes.append(result)
        for criterion, meets in result.meets(slo.limit).items():
            b = found.brackets[criterion]
            inside = (b.good is None or harder(value, b.good)) and (b.bad is None or harder(b.bad, value))
            if inside:
                if meets:
                    b.good = value
                else:
                    b.bad = value
        progress(result)
        return result

    probe(axis.start)
    _bracket(found, probe)
    while True:
        open_ = [b for b in found.brackets.values()
                 if b.good is not None and b.bad is not None and not _narrow(axis, b, rel_tol)]
        if not open_:
            return found
        widest = max(open_, key=lambda b: _width(axis, b))
        probe(_midpoint(axis, widest))


def _bracket(found: Search, probe: Callable[[float], Probe]) -> None:
    """Probe outward until every criterion has a miss and a meet, or say why it cannot.
    Toward the easier side it gives up where a step improves the figure by under 1%
    (:data:`FLAT`): a request alone takes longer than the SLO, and no lower rate or
    further replica changes that."""
    axis, brackets, slo = found.axis, found.brackets, found.slo
    if axis.kind == RATE:
        for _ in range(MAX_DOUBLINGS):
            if brackets["lower"].bad is not None:
                break
            probe(2 * brackets["lower"].good)
        else:
            raise SearchError(f"--vary {axis.key}: the SLO ({slo}) is still met at {axis.key} = "
                              f"{brackets['lower'].good:g}, 2^{MAX_DOUBLINGS} times the config's; nothing saturates?")
    for _ in range(MAX_DOUBLINGS):
        bad = brackets["upper"].bad
        if brackets["upper"].good is not None:
            break
        easier = bad / 2 if axis.kind == RATE else 2 * bad
        if axis.kind == COUNT and easier > axis.most:
            break
        before, step = found.at(bad), probe(easier)
        if before is not None and before.finite and step.finite and step.mean > (1 - FLAT) * before.mean:
            break
    if brackets["mean"].good is None:
        easiest = min(found.probes, key=lambda p: axis.harder * p.value)
        raise SearchError(f"--vary {axis.key}: the SLO ({slo}) is missed even at {axis.key} = {easiest.value:g} "
                          f"({slo.figure} {slo.shown(easiest.mean)}, and no better a step before); it cannot be "
                          f"met by varying this key")


def _narrow(axis: Axis, bracket: Bracket, rel_tol: float) -> bool:
    if axis.kind == COUNT:
        return abs(bracket.good - bracket.bad) <= 1
    return max(bracket.good, bracket.bad) <= (1 + rel_tol) * min(bracket.good, bracket.bad)


def _width(axis: Axis, bracket: Bracket) -> float:
    if axis.kind == COUNT:
        return abs(bracket.good - bracket.bad)
    return abs(math.log(bracket.good / bracket.bad))


def _midpoint(axis: Axis, bracket: Bracket) -> float:
    """Halfway (in log space for a rate, to 4 significant digits where that stays strictly
    inside: probes read better as 2263 than as 2262.741699796952)."""
    if axis.kind == COUNT:
        return (bracket.good + bracket.bad) // 2
    mid = math.sqrt(bracket.good * bracket.bad)
    rounded = float(f"{mid:.4g}")
    return rounded if min(bracket.good, bracket.bad) < rounded < max(bracket.good, bracket.bad) else mid


# --- probing a config ------------------------------------------------------------------

DEFAULT_SEEDS = 3


def seeds_for(config: ExperimentConfig, count: int) -> list[int]:
    """``count`` seeds: the config's own first (``seeds:``, else ``seed``), then the next
    integers after them."""
    listed = list(config.seeds or [config.seed])[:count]
    extra = range(max(listed) + 1, max(listed) + 1 + count - len(listed))
    return listed + list(extra)


@dataclass
class Point:
    """One sweep point of the config (the whole config where it has no sweep): its name,
    its swept values, its config (at the first seed) and the axis on it."""

    name: str
    params: dict
    config: ExperimentConfig
    axis: Axis


def points(runs: list[Run], vary: Optional[str], source: str) -> list[Point]:
    """The sweep points of ``runs`` (the config's, at one seed), each to be searched on
    its own; a key the sweep sets cannot also be the one searched."""
    found = []
    for run in runs:
        axis = resolve_axis(run.config, vary, source)
        for key, value in run.params.items():
            if axis.path == key or (_is_group(key) and axis.path in value):
                raise ConfigError(f"{source}: sweep.{key}: the sweep sets {axis.path}, the key --vary searches; "
                                  f"remove it from the sweep or vary another key")
        found.append(Point(run.point, run.params, run.config, axis))
    return found


def prober(path: Path, config: ExperimentConfig, point: Point, seeds: list[int], slo: Slo, pool) -> Callable:
    """``evaluate(value)`` for :func:`search`: the point's config with the axis at
    ``value``, run once per seed on ``pool``, read into a :class:`Probe`."""
    source, base_dir = str(path), path.resolve().parent
    data = point.config.model_dump(mode="json")
    task = functools.partial(attempt, base_dir=base_dir)

    def evaluate(value: float) -> Probe:
        try:
            runs = point_runs(config, source, {**point.params, **point.axis.params(data, value)}, seeds, {})
        except ConfigError as exc:
            raise ConfigError(f"--vary {point.axis.key} at {value:g}: {exc}") from None
        outcomes = {o.name: o for o in pool.map(task, runs, lost)}
        figures, overloaded, offered, costs, money = [], 0, [], [], []
        for run in runs:
            outcome = outcomes[run.name]
            if outcome.error is not None:
                raise ConfigError(f"{source}: {point.name}: --vary {point.axis.key} at {value:g}, seed {run.seed}: "
                                  f"{outcome.error}")
            table = _table(outcome.files[store.REQUESTS])
            summary = outcome.summary
            figures.append(figure_of(slo, summary, table))
            overloaded += bool(summary.get("overloaded"))
            arrivals = table["arrival"]
            span = float(arrivals.max() - arrivals.min()) if arrivals.size > 1 else 0.0
            offered.append(arrivals.size / span if span > 0 else math.nan)
            cost = summary.get("cost") or {}
            costs.append(cost.get("core_s", cost.get("provisioned_accelerator_s")))
            money.append(cost.get("money"))
        return Probe(value, figures, overloaded, float(np.mean(offered)), _mean(costs), _mean(money))

    return evaluate


def _table(parquet: bytes) -> dict[str, np.ndarray]:
    """The columns of a run's requests.parquet that the figure needs."""
    table = pq.read_table(pa.BufferReader(parquet))
    wanted = [c for c in ("arrival", "finish", "status", "warmup") if c in table.column_names]
    return {c: table.column(c).to_numpy() for c in wanted}


def _mean(values: list) -> Optional[float]:
    return None if any(v is None for v in values) else float(np.mean(values))


@dataclass
class Outcome:
    """What ``servesim capacity`` found: one search per sweep point."""

    slo: Slo
    seeds: list[int]
    rel_tol: float
    searches: dict[str, Search]


def run_capacity(path: Path | str, slo: Slo, vary: Optional[str] = None, seeds: int = DEFAULT_SEEDS,
                 rel_tol: float = 0.02, jobs: Optional[int] = None,
                 progress: Callable[[str, Probe], None] = lambda point, probe: None) -> Outcome:
    """Search every sweep point of the config at ``path`` (see the module docstring)."""
    path = Path(path)
    if seeds < 1:
        raise ConfigError(f"--seeds: needs at least 1 (got {seeds})")
    if not 0 < rel_tol < 1:
        raise ConfigError(f"--tol: a relative tolerance between 0 and 1 exclusive (got {rel_tol:g})")
    config = load(path)
    if slo.figure == VIOLATIONS and config.slo_ms is None:
        raise ConfigError(f"{path}: slo_ms: --slo violations<=... counts requests later than the config's slo_ms, "
                          f"and it has none; set slo_ms or give a latency SLO such as p99<=50ms")
    chosen = seeds_for(config, seeds)
    runs = expand(config, str(path), chosen[:1])
    found = points(runs, vary, str(path))
    validate_runs(runs, path, path.resolve().parent)
    searches = {}
    with make_executor(LOCAL, jobs, None) as pool:
        for point in found:
            evaluate = prober(path, config, point, chosen, slo, pool)
            try:
                searches[point.name] = search(point.axis, slo, evaluate, rel_tol,
                                              functools.partial(progress, point.name))
            except SearchError as exc:
                raise ConfigError(f"{path}: {point.name}: {exc}") from None
    return Outcome(slo, chosen, rel_tol, searches)
