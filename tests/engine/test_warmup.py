"""``warmup_s``: early requests are left out of every per-request figure of a summary,
and kept, flagged, in requests.parquet."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from servesim.experiments import cli
from servesim.policies.batching import DynamicBatcher
from servesim.sim import simulate, summarize
from servesim.sim.records import COMPLETED

from enginekit import make_cost, poisson_trace


def test_a_warm_up_leaves_the_early_requests_out_of_the_figures():
    results = simulate(poisson_trace(900.0, 3000, seed=3), make_cost({1: 1.0, 4: 2.0}), DynamicBatcher(4, 0.001),
                       drop_after=0.004)
    whole, warm = summarize(results, slo=0.003), summarize(results, slo=0.003, warmup=1.0)
    rq = results.requests
    kept = rq.arrival >= 1.0
    done = kept & (rq.status == COMPLETED)
    latency = (rq.finish - rq.arrival)[done]
    assert warm["warmup_requests"] == int((~kept).sum()) > 0 and warm["warmup_s"] == 1.0
    assert warm["requests"] == int(kept.sum()) and warm["completed"] == int(done.sum())
    assert warm["dropped"] + warm["completed"] == warm["requests"]
    for q in (50, 99):
        assert warm["latency_ms"][f"p{q}"] == pytest.approx(np.percentile(latency, q) * 1e3, abs=1e-6)
    assert warm["slo_violation_rate"] == pytest.approx(((latency > 0.003).sum() + (kept.sum() - done.sum()))
                                                       / kept.sum())
    assert warm["cost"] == whole["cost"] and warm["batches"] == whole["batches"]  # cost is the whole run's
    assert "warmup_s" not in whole and whole["requests"] == 3000


def test_runs_flag_the_warm_up_in_their_request_table(servesim_run):
    out, summary = servesim_run({"warmup_s": 0.05})
    table = pd.read_parquet(out / "requests.parquet")
    assert (table["warmup"] == (table["arrival"] < 0.05)).all() and table["warmup"].any()
    assert summary["requests"] == int((~table["warmup"]).sum()) and summary["warmup_requests"] == int(table["warmup"].sum())


@pytest.fixture
def servesim_run(tmp_path):
    """Run a small experiment with ``extra`` top-level keys: (its run folder, its summary)."""
    def run(extra: dict):
        config = {"name": "w", "trace": {"kind": "poisson", "rate": 2000.0, "count": 400},
                  "model": {"profile": "builtin:cpu_mlp", "name": "mlp3"}, **extra}
        (tmp_path / "w.yaml").write_text(yaml.safe_dump(config))
        assert cli.main(["run", str(tmp_path / "w.yaml"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
        [summary] = tmp_path.glob("out/*/summary.json")
        return summary.parent, json.loads(summary.read_text())
    return run
