"""Replicas on priced resources: which profile rows may cost a replica on a resource, and
what a run's resource-seconds cost (the ``resources:`` price table of a config)."""

from __future__ import annotations

from typing import Optional

from servesim.workloads.profile import Profile
from servesim.workloads.variant_costs import LOAD_STAGE
from servesim.workloads.variants import cpu_cores

from .config import ConfigError, ResourceConfig


def measured_on(resource: ResourceConfig, hardware: str) -> bool:
    """Whether profile rows measured on ``hardware`` may cost a replica on ``resource``:
    its own hardware only, and for CPU ``cores`` of hardware ``cpu`` also the per-core-
    count names ``cpu-<n>c`` (a cluster replica's cores pick the row)."""
    if hardware == resource.hardware:
        return True
    return resource.kind == "cores" and resource.hardware == "cpu" and cpu_cores(hardware) is not None


def check_hardware(key: str, name: str, resource: ResourceConfig, model: str, measured: tuple[str, ...]) -> None:
    """A :class:`ConfigError` at ``key`` unless ``model`` was measured (among the
    hardware ``measured``) on ``resource``'s hardware."""
    if not any(measured_on(resource, h) for h in measured):
        raise ConfigError(f"{key}: resource {name!r} is hardware {resource.hardware!r}, but the profile measured "
                          f"{model!r} on {', '.join(measured) or 'nothing'}; a replica's service time must come "
                          f"from its own hardware's profile (got {name!r})")


def as_served_on(profile: Profile, resource: Optional[ResourceConfig]) -> Profile:
    """The profile a replica on ``resource`` is costed by: a ``share`` of a GPU runs its
    kernels ``slowdown`` times slower than the whole GPU measured (loading its weights
    is not slowed); any other resource, as measured."""
    if resource is None or resource.kind != "share":
        return profile
    return profile.slowed(resource.hardware, resource.slowdown, keep=(LOAD_STAGE,))


def priced(cost: dict, name: Optional[str], resources: dict[str, ResourceConfig], resource_s: float) -> dict:
    """``cost`` (a summary's) with the resource, its unit-seconds and their price added
    (nothing where the run names no resource)."""
    if name is None:
        return cost
    return {**cost, "resource": name, "resource_s": round(resource_s, 6),
            "money": round(resource_s * resources[name].price_per_s, 9)}
