"""What is served: model specs (plain, or with exits), measured cost profiles, the cost
model the engine asks how long a batch takes, and per-sample behaviour tables.

This package only describes and answers; it never decides anything (no batching,
routing or scaling) and does not import the engine, the policies or the experiments.
Profile tables are in milliseconds; everything the cost model returns is in seconds.
"""

from servesim.workloads.behaviour import (
    BehaviourError,
    BehaviourTable,
    fixed_exits,
    from_apparate_pickle,
    load_table,
    save_table,
    synthetic,
)
from servesim.workloads.cost_model import CostModel, ProfileRangeError, ProfileRangeWarning
from servesim.workloads.exits import ExitModel, Segment, SegmentCosts
from servesim.workloads.model import ModelSpec
from servesim.workloads.noise import (
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
from servesim.workloads.profile import (
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
    "BehaviourError",
    "BehaviourTable",
    "ExitModel",
    "Segment",
    "SegmentCosts",
    "fixed_exits",
    "from_apparate_pickle",
    "load_table",
    "save_table",
    "synthetic",
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
