"""What is served: model specs, measured cost profiles, and the cost model the engine
asks how long a batch takes.

This package only describes and answers; it never decides anything (no batching,
routing or scaling) and does not import the engine, the policies or the experiments.
Profile tables are in milliseconds; everything the cost model returns is in seconds.
"""

from workloads.cost_model import CostModel, ProfileRangeError, ProfileRangeWarning
from workloads.model import ModelSpec
from workloads.noise import (
    BLOCK,
    Deterministic,
    Empirical,
    Exponential,
    Gamma,
    LogNormal,
    Noise,
    Percentiles,
    Sampler,
)
from workloads.profile import (
    COLUMNS,
    PROFILES_DIR,
    REQUIRED_METADATA,
    Profile,
    ProfileError,
    ProfileRow,
    load_profile,
)

__all__ = [
    "BLOCK",
    "COLUMNS",
    "CostModel",
    "Deterministic",
    "Empirical",
    "Exponential",
    "Gamma",
    "LogNormal",
    "ModelSpec",
    "Noise",
    "PROFILES_DIR",
    "Percentiles",
    "Profile",
    "ProfileError",
    "ProfileRangeError",
    "ProfileRangeWarning",
    "ProfileRow",
    "REQUIRED_METADATA",
    "Sampler",
    "load_profile",
]
