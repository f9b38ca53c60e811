"""What a served model is, to the simulator: a name and the ordered stages a request
passes through (a plain model is one stage).

Stages are kept separate rather than folded into one latency because multi-stage
pipelines (encoder then decoder, retrieval then ranking, sharded blocks) are measured
per stage, and the order is part of the model: it is taken from the profile, where it is
the order the stages first appear.
"""

from __future__ import annotations

from dataclasses import dataclass

from servesim.workloads.profile import Profile


@dataclass(frozen=True)
class ModelSpec:
    """A model name and its stage names, in execution order (non-empty, unique)."""

    name: str
    stages: tuple[str, ...]

    def __post_init__(self) -> None:
        stages = tuple(self.stages)
        object.__setattr__(self, "stages", stages)
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"model name must be a non-empty string, got {self.name!r}")
        if not stages:
            raise ValueError(f"model {self.name!r} needs at least one stage")
        for stage in stages:
            if not isinstance(stage, str) or not stage:
                raise ValueError(f"model {self.name!r}: stage names must be non-empty strings, got {stage!r}")
        repeated = sorted({s for s in stages if stages.count(s) > 1})
        if repeated:
            raise ValueError(f"model {self.name!r}: stage name(s) {repeated} appear more than once")

    @classmethod
    def from_profile(cls, profile: Profile, model: str) -> "ModelSpec":
        """The model as the profile describes it, stages in the order first seen there."""
        return cls(model, profile.stages(model))
