# %% [markdown]
# # servesim from Python
#
# A notebook in script form (each `# %%` is a cell; Jupyter, VS Code and `jupytext` open it
# as one). It runs as it is, `python docs/api_example.py`, and the test suite runs it too
# (tests/test_api_example.py). See docs/API.md for the whole surface.
#
# Three things: run an experiment and read its results as DataFrames; build one run in
# code; add an exit policy of your own and compare it with the shipped ones.

# %%
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

import servesim
from servesim.policies.batching import DynamicBatcher
from servesim.policies.exit import ExitPolicy
from servesim.traces import poisson
from servesim.workloads import Empirical, load_profile
from servesim.workloads.profile import PROFILES_DIR

OUT = Path("runs/api_example")

# %% [markdown]
# ## 1. An experiment, as a mapping (the same keys as a YAML file)
# Dynamic batching for the quickstart's MLP on two CPU replicas: two settings, two seeds.

# %%
quickstart = {
    "name": "api_quickstart",
    "seeds": [1, 2],
    "slo_ms": 10,
    "trace": {"kind": "poisson", "rate": 3200, "duration": 2},
    "model": {"profile": "builtin:cpu_mlp", "name": "mlp3"},
    "serving": {"replicas": 2, "router": "jsq"},
    "sweep": {"serving.batching": [{"policy": "dynamic", "max_batch": 1},
                                   {"policy": "dynamic", "max_batch": 8, "max_wait_ms": 1}]},
}
sweep = servesim.run(quickstart, OUT / "batching", force=True, plots=False)
print(sweep.results[["run", "latency_p50_ms", "latency_p99_ms", "slo_violation_rate"]].to_string(index=False))
print(sweep.by_point[["point", "seeds", "latency_p99_ms", "latency_p99_ms_ci95"]].to_string(index=False))

requests = sweep.runs[0].requests  # one row per request
latency_ms = 1e3 * (requests["finish"] - requests["arrival"])[~requests["dropped"]]
print(f"{sweep.runs[0].name}: {len(requests)} requests, p99 {np.percentile(latency_ms, 99):.3f} ms")

# %% [markdown]
# ## 2. One run built in code
# The same model and arrivals, without a config: a trace, a cost model from the shipped
# profile (service times drawn from its measured percentiles) and a batcher.

# %%
profile = load_profile(PROFILES_DIR / "cpu_mlp.csv")
costs = servesim.CostModel(profile, "mlp3", noise=Empirical())
trace = poisson(3200, duration=2, rng=np.random.default_rng(1))
results = servesim.simulate(trace, costs, DynamicBatcher(8, 1e-3), replicas=2, rng=np.random.default_rng(1))
summary = servesim.summarize(results, slo=10e-3)
print(f"in code: p50 {summary['latency_ms']['p50']:.3f} ms, p99 {summary['latency_ms']['p99']:.3f} ms, "
      f"SLO violations {summary['slo_violation_rate']:.2%}")
print(results.requests.to_frame().head(3).to_string(index=False))


# %% [markdown]
# ## 3. An exit policy of your own
# Stop at the first exit whose confidence reaches a threshold, as the `confidence` policy
# does; but a request that reaches the final exit is answered by its *most confident* exit
# (recall), not by the final one. Two classes: the policy (what the engine asks), and its
# config entry (its name and parameters, validated), registered under a name YAML can use.

# %%
class MostConfident(ExitPolicy):
    name = "most_confident"

    def __init__(self, threshold: float):
        self.threshold = threshold

    def decide(self, obs):
        confidence = obs.confidence[:, obs.exit_index]
        if obs.exit_index < obs.n_exits - 1:
            return confidence >= self.threshold, np.full(confidence.shape, obs.exit_index)
        # NaN: a ramp that did not run; the final exit always ran, so every row has a number
        return np.ones(confidence.shape, dtype=bool), np.nanargmax(obs.confidence, axis=1)

    def params(self):
        return {"threshold": self.threshold}


@servesim.EXIT_POLICIES.register
class MostConfidentPolicy(servesim.Spec):
    """Confidence threshold, with recall of the most confident exit at the end."""
    name: Literal["most_confident"]
    threshold: float = Field(ge=0, le=1)

    def build(self, costs, batch):
        return MostConfident(self.threshold)


exits = {
    "name": "api_exits",
    "seeds": [1, 2, 3],
    "trace": {"kind": "poisson", "rate": 150, "count": 2000},
    "model": {"profile": "builtin:cpu_digits_ee", "name": "digits_ee"},
    "serving": {"batching": {"policy": "dynamic", "max_batch": 16}},
    "exits": {"ramps": {"block1": "ramp1", "block2": "ramp2", "block3": "ramp3"},
              "behaviour": {"kind": "builtin", "name": "digits_ee"}, "policy": "never"},
    "sweep": {"exits.policy": ["never", {"name": "confidence", "threshold": 0.9},
                               {"name": "most_confident", "threshold": 0.9}]},
}
compared = servesim.run(exits, OUT / "exits", force=True, plots=False)
print(compared.by_point[["point", "accuracy", "accuracy_ci95", "latency_p50_ms", "latency_p50_ms_ci95"]]
      .to_string(index=False))
