"""The engine: SimPy workers, dispatcher and per-request records. See engine.simulate."""
from .engine import SimulationError, simulate
from .metrics import summarize
from .records import COMPLETED, DROPPED, REJECTED, RequestTable, Results

__all__ = ["simulate", "summarize", "SimulationError", "Results", "RequestTable", "COMPLETED", "DROPPED", "REJECTED"]
