"""Every numeric parameter of every batching policy (a single model's and a cluster's), the
serving host, exit policy, load predictor and adapter, fuzzed (issue 21): zero, negative, a
fraction where a whole number is meant, NaN, ±infinity, huge, and the wrong type. Routers
have no numeric parameter.

Each case is one value at one key path of a small working experiment. What must happen
is decided here, from what the parameter means (:class:`Range`), not read off the
validators: a value out of range ends in exactly one ``servesim: error:`` line naming
the key path and the value, exit status 2, nothing written; a value in range runs, in
bounded time, to a sane result (every request accounted for, finite latencies,
accuracy and cost in range). Never a traceback, a hang or a silent nonsense result.

The cases are a fixed table (:data:`CASES`): the same on every run, as CI needs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd
import pytest
import yaml

from guards import memory_cap, time_limit

ERROR = "servesim: error: "
HUGE_INT, HUGE_FLOAT = 10**30, 1e300
CASE_SECONDS = 120  # a case still running after this has hung (a run here takes well under 10 s)


@dataclass(frozen=True)
class Range:
    """What a parameter means: ``low``/``high`` bounds (``None``: none), whether each
    is open, whether only whole numbers make sense, and ``most``: the largest value the
    parameter is documented to take (past it a run would not end or not fit in memory)."""

    low: Optional[float] = None
    low_open: bool = False
    high: Optional[float] = None
    high_open: bool = False
    whole: bool = False
    most: Optional[float] = None
    items: Optional["Range"] = None  # where a list is also a value: the range of each item
    length: Optional[int] = None     # ... and the length it must have
    scalar: bool = True              # False: only a list is a value

    def admits(self, value) -> bool:
        if isinstance(value, list):
            return (self.items is not None and (self.length is None or len(value) == self.length)
                    and all(self.items.admits(v) for v in value))
        if not self.scalar or isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            return False
        if self.whole and value != int(value):
            return False
        if self.whole and isinstance(value, float):  # YAML 0.5 is a float: only ints are whole numbers
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return self.most is None or value <= self.most


POSITIVE = Range(low=0, low_open=True)
WEIGHT = Range(low=0, most=1e6)                                 # an objective weight or a margin
NON_NEGATIVE = Range(low=0)
COUNT = Range(low=0, low_open=True, whole=True)                 # 1, 2, ... without a limit of its own
BUDGET_FRACTION = Range(low=0, high=1, high_open=True)         # an accuracy drop in [0, 1)
PROBABILITY_OPEN = Range(low=0, low_open=True, high=1, high_open=True)
DISCOUNT = Range(low=0, low_open=True, high=1)                 # T-Tamer's lambda in (0, 1]
UNIT = Range(low=0, high=1)


def bounded(base: Range, most: float) -> Range:
    return dataclasses.replace(base, most=most)


SECONDS = bounded(COUNT, 366 * 86_400)  # a window, period or horizon: at most a year
GRID = Range(low=2, whole=True, most=100_000, items=NON_NEGATIVE)  # quantile cuts, or entropy thresholds
BINS = bounded(COUNT, 100_000)
BATCH = bounded(COUNT, 65_536)
REQUESTS = bounded(COUNT, 10**9)  # a window in batches or samples: no run has more requests


# --- the experiments the values are put into ---------------------------------------------

SINGLE = {"name": "fuzz", "seed": 0, "slo_ms": 5.0,
          "trace": {"kind": "poisson", "rate": 2000.0, "count": 300},
          "model": {"profile": "builtin:cpu_mlp", "name": "mlp3"},
          "serving": {"replicas": 2, "router": "jsq",
                      "batching": {"policy": "dynamic", "max_batch": 4, "max_wait_ms": 1.0}}}
EXITS = {"name": "fuzz", "seed": 0, "trace": {"kind": "poisson", "rate": 2000.0, "count": 300},
         "model": {"profile": "builtin:cpu_digits_ee", "name": "digits_ee"},
         "serving": {"replicas": 2, "batching": {"policy": "dynamic", "max_batch": 4, "max_wait_ms": 0.5}},
         "exits": {"ramps": {"block1": "ramp1", "block2": "ramp2", "block3": "ramp3"},
                   "behaviour": {"kind": "builtin", "name": "digits_ee"}, "policy": "never"}}
CLUSTER = {"name": "fuzz", "seed": 0, "slo_ms": 750, "trace": {"kind": "poisson", "rate": 20.0, "duration": 60},
           "cluster": {"pipeline": "classification", "profile": "builtin:cpu_video", "core_mode": "lanes",
                       "initial": {"classification": [{"variant": "resnet18", "cores": 4}]},
                       "adapter": "static"}}
PIPELINE = {**CLUSTER, "slo_ms": 3000, "cluster": {
    "pipeline": "video", "profile": "builtin:cpu_video", "core_mode": "threads",
    "initial": {"detection": [{"variant": "yolov5n", "replicas": 1}],
                "classification": [{"variant": "resnet18", "replicas": 1}]}, "adapter": "static"}}
LSTM_TRAIN = {"kind": "poisson", "rate": 20.0, "duration": 600}

# where each family's parameters go: (base experiment, key path, the entry with its required keys)
BATCHING = {"dynamic": {"policy": "dynamic", "max_batch": 4, "max_wait_ms": 1.0},
            "deadline": {"policy": "deadline", "max_batch": 4, "slo_ms": 5.0},
            "fixed": {"policy": "fixed", "batch_size": 2}}
CLUSTER_BATCHING = {"dynamic": {"max_wait_ms": 1.0}, "deadline": {"policy": "deadline", "slo_ms": 500.0}}
EXIT_POLICIES = {"apparate": {"name": "apparate"}, "best_static": {"name": "best_static"},
                 "branchynet": {"name": "branchynet"}, "deebert": {"name": "deebert"},
                 "confidence": {"name": "confidence", "threshold": 0.9}, "entropy": {"name": "entropy", "threshold": 0.5},
                 "optimal_no_recall": {"name": "optimal_no_recall", "lam": 0.9},
                 "ttamer": {"name": "ttamer", "lam": 0.9}, "patience": {"name": "patience", "k": 2}}
PREDICTORS = {"last": {"kind": "last"}, "window_max": {"kind": "window_max"}, "ewma": {"kind": "ewma"},
              "ar": {"kind": "ar"}, "seasonal": {"kind": "seasonal", "period_s": 120, "window_s": 10},
              "lstm": {"kind": "lstm", "train": LSTM_TRAIN, "epochs": 2}}
ADAPTERS = {"static": (CLUSTER, {"name": "static"}),
            "hpa": (CLUSTER, {"name": "hpa", "variant": "resnet18"}),
            "vpa": (CLUSTER, {"name": "vpa", "variant": "resnet18"}),
            "infadapter": (CLUSTER, {"name": "infadapter", "budget": 8}),
            "ms": (CLUSTER, {"name": "ms", "budget": 8}),
            "ipa": (PIPELINE, {"name": "ipa", "sla_ms": 3000}),
            "fa2": (PIPELINE, {"name": "fa2", "sla_ms": 3000, "variants": {"detection": "yolov5n",
                                                                          "classification": "resnet18"}}),
            "rim": (PIPELINE, {"name": "rim", "sla_ms": 3000})}

# family -> entry -> parameter -> what it means
MEANINGS = {
    "batching": {
        "dynamic": {"max_batch": BATCH, "max_wait_ms": NON_NEGATIVE,
                    "preferred": Range(scalar=False, items=bounded(COUNT, 4)),  # sizes up to max_batch (4)
                    # the largest allowed size must be max_batch (4): of the values tried, no list has it
                    "allowed_sizes": Range(scalar=False, items=Range(low=4, high=4, whole=True))},
        "deadline": {"max_batch": BATCH, "slo_ms": POSITIVE},
        "fixed": {"batch_size": BATCH},
    },
    "cluster batching": {  # every deployment's, up to its plan's batch
        "dynamic": {"max_wait_ms": NON_NEGATIVE},
        "deadline": {"slo_ms": POSITIVE},
    },
    "serving host": {  # one server process: one replica
        "assumed": {"intake_assumed_ms": Range(low=0, high=1e3), "launch_share": UNIT},
    },
    "cluster host": {  # one server process: one lane under the static adapter
        "assumed": {"intake_assumed_ms": Range(low=0, high=1e3), "launch_share": UNIT},
    },
    "exit policy": {
        "apparate": {"accuracy_budget": BUDGET_FRACTION, "ramp_budget": NON_NEGATIVE, "max_ramps": COUNT,
                     "tuning_window": REQUESTS, "adjustment_window": REQUESTS, "adjustment_period": REQUESTS,
                     "initial_step": Range(low=0.001, high=1),  # >= min_step (0.001)
                     "min_step": Range(low=0, low_open=True, high=0.01),  # <= initial_step (0.01)
                     "new_ramp_threshold": UNIT},
        "best_static": {"accuracy_budget": BUDGET_FRACTION, "grid": dataclasses.replace(GRID, items=UNIT)},
        "branchynet": {"accuracy_budget": BUDGET_FRACTION, "grid": GRID},
        "deebert": {"accuracy_budget": BUDGET_FRACTION, "grid": GRID},
        "confidence": {"threshold": dataclasses.replace(UNIT, items=UNIT, length=4)},  # one per exit (4)
        "entropy": {"threshold": dataclasses.replace(NON_NEGATIVE, items=NON_NEGATIVE, length=4)},
        "optimal_no_recall": {"lam": DISCOUNT, "bins": BINS},
        "ttamer": {"lam": DISCOUNT, "bins": BINS, "aggregate": bounded(COUNT, 1000)},  # at most bins (1000)
        "patience": {"k": COUNT},
    },
    "predictor": {
        "last": {"margin": WEIGHT, "window_s": SECONDS},
        "window_max": {"margin": WEIGHT, "window_s": SECONDS},
        "ewma": {"margin": WEIGHT, "span": Range(low=1, most=1e6), "window_s": SECONDS},  # span in windows
        "ar": {"margin": WEIGHT, "order": bounded(COUNT, 5),  # lookback (12) >= 2 * order + 2
               "window_s": SECONDS, "lookback": Range(low=4, whole=True, most=10_000)},  # >= 2 * order (1) + 2
        "seasonal": {"margin": WEIGHT, "period_s": Range(low=10, whole=True, most=366 * 86_400),  # >= window_s
                     "window_s": bounded(COUNT, 120)},  # <= period_s
        "lstm": {"margin": WEIGHT, "window_s": SECONDS, "lookback": bounded(COUNT, 10_000), "horizon_s": SECONDS,
                 "hidden": bounded(COUNT, 4096), "epochs": bounded(COUNT, 10_000),
                 "seed": Range(low=0, whole=True, most=2**63 - 1)},
    },
    "adapter": {
        "static": {"interval_s": POSITIVE},
        "hpa": {"interval_s": POSITIVE, "target": POSITIVE, "tolerance": NON_NEGATIVE,
                "stabilization_s": NON_NEGATIVE, "min_replicas": bounded(COUNT, 20),  # <= max_replicas (20)
                "max_replicas": bounded(COUNT, 100_000)},
        "vpa": {"interval_s": POSITIVE, "percentile": PROBABILITY_OPEN, "margin": WEIGHT,
                "half_life_s": POSITIVE, "min_cores": bounded(COUNT, 20),  # <= max_cores (20)
                "max_cores": Range(low=2, whole=True, most=1024)},  # >= min_cores (2)
        "infadapter": {"interval_s": POSITIVE, "budget": Range(low=2, whole=True, most=1024),  # >= min_cores (2)
                       "alpha": WEIGHT, "beta": WEIGHT, "min_cores": bounded(COUNT, 8),  # <= budget (8)
                       "capacity_slo_ms": Range(low=10),  # the fastest variant needs ~10 ms
                       "stabilization": COUNT},
        "ms": {"interval_s": POSITIVE, "budget": Range(low=2, whole=True, most=1024), "alpha": WEIGHT,
               "beta": WEIGHT, "min_cores": bounded(COUNT, 8), "capacity_slo_ms": Range(low=10)},
        "ipa": {"interval_s": POSITIVE, "sla_ms": POSITIVE, "alpha": WEIGHT, "beta": WEIGHT,
                "gamma": WEIGHT, "cores": bounded(COUNT, 2)},  # the profile measured 1 and 2 cores
        "fa2": {"interval_s": POSITIVE, "sla_ms": POSITIVE, "alpha": WEIGHT, "beta": WEIGHT,
                "gamma": WEIGHT, "cores": bounded(COUNT, 2)},
        "rim": {"interval_s": POSITIVE, "sla_ms": POSITIVE, "alpha": WEIGHT, "beta": WEIGHT,
                "gamma": WEIGHT, "cores": bounded(COUNT, 2), "replicas": bounded(COUNT, 100)},
    },
}
# the values every parameter is tried with
VALUES = (0, -1, 0.5, math.nan, math.inf, -math.inf, "huge", "abc", [1, 2])


def _place(family: str, entry: str, param: str, value) -> tuple[dict, str]:
    """The experiment with ``value`` at the parameter, and the key path that names it."""
    if family == "batching":
        config, path = json.loads(json.dumps(SINGLE)), "serving.batching"
        config["serving"]["batching"] = {**BATCHING[entry], param: value}
    elif family == "cluster batching":
        config, path = json.loads(json.dumps(CLUSTER)), "cluster.batching"
        config["cluster"]["batching"] = {**CLUSTER_BATCHING[entry], param: value}
    elif family == "serving host":
        config, path = json.loads(json.dumps(SINGLE)), "serving.host"
        config["serving"]["replicas"] = 1
        config["serving"]["host"] = {"intake_assumed_ms": 0.1, "launch_share": 1.0, param: value}
    elif family == "cluster host":
        config, path = json.loads(json.dumps(CLUSTER)), "cluster.host"
        config["cluster"]["initial"] = {"classification": [{"variant": "resnet18", "cores": 1}]}
        config["cluster"]["host"] = {"intake_assumed_ms": 0.1, "launch_share": 1.0, param: value}
    elif family == "exit policy":
        config, path = json.loads(json.dumps(EXITS)), "exits.policy"
        config["exits"]["policy"] = {**EXIT_POLICIES[entry], param: value}
        if entry == "apparate":  # it learns from every request's final output
            config["exits"]["semantics"] = "latency_only"
    elif family == "predictor":
        config, path = json.loads(json.dumps(CLUSTER)), "cluster.adapter.predictor"
        config["cluster"]["adapter"] = {"name": "infadapter", "budget": 8,
                                        "predictor": {**PREDICTORS[entry], param: value}}
    else:
        base, adapter = ADAPTERS[entry]
        config, path = json.loads(json.dumps(base)), "cluster.adapter"
        config["cluster"]["adapter"] = {**adapter, param: value}
    return config, path


def _cases():
    for family, entries in MEANINGS.items():
        for entry, params in entries.items():
            for param, meaning in params.items():
                for value in VALUES:
                    if value == "huge":
                        value = HUGE_INT if meaning.whole else HUGE_FLOAT
                    yield pytest.param(family, entry, param, value, meaning,
                                       id=f"{family}-{entry}-{param}={value!r}"[:100])


CASES = list(_cases())


def assert_sane(out: Path, config: dict) -> None:
    """A run's results: every request accounted for, finite latencies, accuracy in [0, 1],
    a finite non-negative cost."""
    [row] = pd.read_csv(out / "results.csv").to_dict("records")
    assert row["status"] == "ok", row
    assert row["requests"] > 0 and row["completed"] + row["dropped"] + row["rejected"] == row["requests"], row
    assert row["completed"] > 0, row
    for key in ("latency_p50_ms", "latency_p99_ms", "throughput_rps"):
        assert math.isfinite(row[key]) and row[key] > 0, (key, row)
    assert row["latency_p50_ms"] <= row["latency_p99_ms"], row
    if "exits" in config:
        assert 0 <= row["accuracy"] <= 1, row
    if "cluster" in config:
        assert math.isfinite(row["cost"]) and row["cost"] >= 0, row


@pytest.mark.parametrize("family, entry, param, value, meaning", CASES)
def test_every_numeric_parameter(servesim, tmp_path, family, entry, param, value, meaning):
    config, where = _place(family, entry, param, value)
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    out = tmp_path / "out"
    with time_limit(CASE_SECONDS), memory_cap():  # a hang or an allocation without end fails the case
        rc, printed, err = servesim("run", path, "--out", out, "--quiet")
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    if meaning.admits(value):
        assert rc == 0 and all(line.startswith("warning: ") or ": warning: " in line for line in lines), (param, value, rc, err)
        assert_sane(out, config)
    else:  # one line that names the key path, the parameter and the value
        assert rc == 2 and printed == "" and len(lines) == 1, (param, value, rc, printed, lines)
        line = lines[0]
        assert line.startswith(ERROR) and f"{where}.{param}" in line or f"{where}: " in line and param in line, line
        shown = [repr(value)] + ([repr([float(v) for v in value])] + [f"(got {v!r})" for v in value]
                                 if isinstance(value, list) else [])
        assert any(s in line for s in shown), line
        assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_the_table_is_big_enough():
    """The issue asks for at least 300 cases."""
    assert len(CASES) >= 300
