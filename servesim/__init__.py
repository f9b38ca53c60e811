"""servesim: a discrete-event simulator for the accuracy / latency / cost trade-offs of ML serving.

Run an experiment and read its results as DataFrames::

    import servesim
    sweep = servesim.run("experiments/quickstart.yaml", "runs/quickstart")   # or a dict
    sweep.results                   # one row per run (results.csv)
    sweep.by_point                  # one row per sweep point: means over seeds, 95% intervals
    sweep.runs[0].requests          # one row per request (requests.parquet)
    servesim.read("runs/quickstart")   # the same, from a folder written earlier

Build one run in code: :func:`simulate` (one model on ``replicas`` replicas) serves a
:class:`Trace` (``servesim.traces``: ``poisson``, ``gamma``, ``load``, ...) with a
:class:`CostModel` (``servesim.workloads``) and a batcher (``servesim.policies.batching``);
``results.requests.to_frame()`` is its per-request table, :func:`summarize` its figures.

Add a policy without editing the package: a pydantic class registered in one of the
registries (``BATCHING``, ``ROUTERS``, ``EXIT_POLICIES``, ``TRACES``, ``LOADS``, ``NOISE``,
``BEHAVIOUR``, ``PREDICTORS``, ``ADAPTERS``) is a name a config may use from then on; see
docs/API.md. The source folders (sim/, workloads/, policies/, traces/, experiments/)
install as the subpackages ``servesim.sim``, ``servesim.workloads``, ...

The names are loaded when first used, so ``import servesim.sim`` (the engine alone) does
not pay for the experiment layer.
"""

from importlib import import_module, metadata

try:
    __version__ = metadata.version("servesim")
except metadata.PackageNotFoundError:  # the source tree, not installed: `pip install -e .` first
    __version__ = "unknown (not installed)"

# public name -> the module that defines it
_EXPORTS = {
    "run": "servesim.api", "read": "servesim.api", "Sweep": "servesim.api", "RunOutput": "servesim.api",
    "ServesimWarning": "servesim.api",
    "simulate": "servesim.sim", "summarize": "servesim.sim", "Results": "servesim.sim",
    "RequestTable": "servesim.sim", "SimulationError": "servesim.sim",
    "Trace": "servesim.traces", "CostModel": "servesim.workloads",
    "load_config": "servesim.experiments.config", "ConfigError": "servesim.experiments.config",
    "Spec": "servesim.experiments.specs",
    **{name: "servesim.experiments.registry" for name in
       ("TRACES", "LOADS", "NOISE", "BATCHING", "ROUTERS", "BEHAVIOUR", "EXIT_POLICIES", "PREDICTORS",
        "ADAPTERS")},
}
_RENAMED = {"load_config": "load"}  # public name -> its name in its module
# the registries are filled as the config models that name their entries are built
_FILLED_BY = {"servesim.experiments.registry": "servesim.experiments.config"}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'servesim' has no attribute {name!r}")
    module = _EXPORTS[name]
    if module in _FILLED_BY:
        import_module(_FILLED_BY[module])
    value = getattr(import_module(module), _RENAMED.get(name, name))
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
