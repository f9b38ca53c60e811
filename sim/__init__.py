"""The engine (sim.cluster: lanes, lazy routing, plans), its per-request records and summaries. Start at engine.simulate."""
from .closed_loop import ClientCosts, ClosedLoop, RequestRate, ThinkTime
from .engine import simulate
from .errors import SimulationError
from .metrics import summarize
from .records import COMPLETED, DROPPED, REJECTED, RequestTable, Results

__all__ = ["simulate", "ClientCosts", "ClosedLoop", "RequestRate", "ThinkTime", "summarize", "SimulationError", "Results", "RequestTable",
           "COMPLETED", "DROPPED", "REJECTED"]
