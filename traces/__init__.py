"""When requests arrive: the workload side of servesim.

This package owns arrival traces: synthetic arrival processes, readers for public trace
formats (turning per-bin counts into arrival times), pure transforms (window, rescale,
speed up, truncate) and summary statistics. Everything it returns is a validated
:class:`Trace`. It never simulates serving: no queues, workers or clocks live here, and
all randomness comes from an explicit ``numpy.random.Generator``.
"""

from servesim.traces.counts import from_counts
from servesim.traces.generators import diurnal, gamma, mmpp2, poisson, spike, step
from servesim.traces.loaders import (
    FORMATS,
    Format,
    load,
    load_azure_functions,
    load_azure_llm,
    load_timestamps,
    load_twitter_counts,
)
from servesim.traces.stats import describe
from servesim.traces.trace import Trace, TraceError
from servesim.traces.transforms import compress_time, concat, head, scale_rate, window

__all__ = [
    "FORMATS",
    "Format",
    "Trace",
    "TraceError",
    "compress_time",
    "describe",
    "diurnal",
    "from_counts",
    "gamma",
    "head",
    "load",
    "load_azure_functions",
    "load_azure_llm",
    "load_timestamps",
    "load_twitter_counts",
    "mmpp2",
    "poisson",
    "scale_rate",
    "spike",
    "step",
    "window",
    "concat",
]
