"""The engine's own error type."""


class SimulationError(RuntimeError):
    """The engine cannot go on: one of its invariants broke, or a policy asked for
    something that can never happen (such as waiting for requests after the last one)."""
