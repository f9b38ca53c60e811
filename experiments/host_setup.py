"""The serving host of a run (``serving.host``, or ``cluster.host`` for a one-lane
cluster) built from its config block, as both runners build it."""

from __future__ import annotations

from typing import Optional

from servesim.sim.host import ServingHost
from servesim.workloads import Profile, ProfileError
from servesim.workloads.exits import INTAKE
from servesim.workloads.noise import Empirical, Percentiles

from .config import ConfigError, HostConfig


def build_host(host: Optional[HostConfig], profile: Profile, hardware: Optional[str],
               key: str = "serving.host") -> Optional[ServingHost]:
    """The serving host ``host`` configures (at ``key``), or ``None``: the per-request
    intake time is assumed, or the mean of ``profile``'s (the run's) ``intake`` row on
    ``hardware`` (one request's intake, batch size 1) as the ``empirical`` noise model
    reads its percentiles: a resource's load is its mean, not its median."""
    if host is None:
        return None
    if host.intake_assumed_ms is not None:
        return ServingHost(host.intake_assumed_ms / 1e3, host.launch_share)
    if host.intake not in profile.models() or INTAKE not in profile.stages(host.intake):
        raise ConfigError(f"{key}.intake: {profile.source} has no model {host.intake!r} with an "
                          f"{INTAKE!r} stage (servesim profile-served measures one for a model that takes requests "
                          f"in); models: {', '.join(profile.models())}")
    try:
        row = profile.rows_for(host.intake, INTAKE, hardware)[0]
    except ProfileError as exc:
        raise ConfigError(f"{key}.intake: {exc}") from None
    if row.batch_size != 1:
        raise ConfigError(f"{key}.intake: {profile.source}: the {INTAKE!r} rows of {host.intake!r} are per "
                          f"request (batch size 1); its first is at batch size {row.batch_size}")
    seconds = Percentiles(row.latency_p50_ms / 1e3, row.latency_p90_ms / 1e3, row.latency_p99_ms / 1e3)
    return ServingHost(Empirical().mean(seconds), host.launch_share)
