"""Replaying a measured server with exits: each request's exit stage fixed by given
shares (fixed_exits) or by the trace (trace_exits, issue 15, item 7), and host times
assumed where no served profile exists (exits.host_assumed_ms, issue 15, item 8)."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from servesim.workloads import fixed_exits
from servesim.workloads.behaviour import BehaviourError

SHARES = [0.3, 0.25, 0.2, 0.25]


def test_the_table_has_exactly_the_shares_and_stops_each_row_at_its_exit():
    table = fixed_exits(1001, SHARES)
    first_confident = table.confidence.argmax(axis=1)
    assert np.bincount(first_confident).tolist() == [301, 250, 200, 250]  # 300.3 has the largest remainder
    assert ((table.confidence >= 0.5) == (np.arange(4) >= first_confident[:, None])).all()
    assert table.correct.all() and table.agrees.all()


@pytest.mark.parametrize("shares", [[1.0], [0.5, 0.6], [-0.1, 1.1], [np.nan, 1.0]])
def test_bad_shares_are_refused(shares):
    with pytest.raises(BehaviourError, match="shares must be"):
        fixed_exits(10, shares)


def test_requests_leave_at_the_given_shares(servesim, tmp_path):
    config = {"name": "fixed", "trace": {"kind": "poisson", "rate": 2000.0, "count": 4000},
              "model": {"profile": "builtin:cpu_digits_ee", "name": "digits_ee"},
              "serving": {"batching": {"policy": "dynamic", "max_batch": 8, "max_wait_ms": 0.5}},
              "exits": {"ramps": {"block1": "ramp1", "block2": "ramp2", "block3": "ramp3"},
                        "behaviour": {"kind": "fixed_exits", "shares": SHARES},
                        "policy": {"name": "confidence", "threshold": 0.5}}}
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(config))
    assert servesim("run", tmp_path / "f.yaml", "--out", tmp_path / "out", "--quiet").rc == 0
    [path] = (tmp_path / "out").glob("*/summary.json")
    share = json.loads(path.read_text())["exits"]["share"]
    # 4,000 requests drawn from the table: each share within 3 standard errors (0.007 at most)
    assert list(share.values()) == pytest.approx(SHARES, abs=0.021)


def test_shares_that_do_not_sum_to_one_are_a_config_error(servesim, tmp_path):
    config = {"trace": {"kind": "poisson", "rate": 100.0, "count": 10},
              "model": {"profile": "builtin:cpu_digits_ee", "name": "digits_ee"},
              "exits": {"ramps": {"block1": "ramp1", "block2": "ramp2", "block3": "ramp3"},
                        "behaviour": {"kind": "fixed_exits", "shares": [0.5, 0.5, 0.5, 0.5]}, "policy": "never"}}
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(config))
    outcome = servesim("check", tmp_path / "f.yaml")
    assert outcome.rc == 2 and len(outcome.err_lines) == 1
    assert "exits.behaviour" in outcome.err_lines[0] and "shares must sum to 1" in outcome.err_lines[0]


def _p50(servesim, tmp_path, name: str, exits_extra: dict) -> float:
    config = {"name": name, "trace": {"kind": "poisson", "rate": 10.0, "count": 50},
              "model": {"profile": "builtin:cpu_digits_ee", "name": "digits_ee", "noise": {"kind": "deterministic"}},
              "exits": {"ramps": {"block1": "ramp1", "block2": "ramp2", "block3": "ramp3"},
                        "behaviour": {"kind": "fixed_exits", "shares": [0, 0, 0, 1]},
                        "policy": {"name": "confidence", "threshold": 0.5}, **exits_extra}}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
    assert servesim("run", tmp_path / f"{name}.yaml", "--out", tmp_path / name, "--quiet").rc == 0
    [path] = (tmp_path / name).glob("*/summary.json")
    return json.loads(path.read_text())["latency_ms"]["p50"]


def test_assumed_host_times_are_charged_where_the_host_spends_them(servesim, tmp_path):
    """Every request runs to the final exit, alone on an idle server: it pays the batch's
    host time once, a decision at each of the three ramps nobody leaves, and the final
    answer: 0.1 + 3 x 0.2 + 0.05 = 0.75 ms over the same run without a host."""
    plain = _p50(servesim, tmp_path, "plain", {})
    charged = _p50(servesim, tmp_path, "charged",
                   {"host_assumed_ms": {"batch": 0.1, "exit": 0.2, "leave": 0.3, "final": 0.05}})
    assert charged - plain == pytest.approx(0.75, abs=1e-6)


@pytest.mark.parametrize("extra, message", [
    ({"host_assumed_ms": {"batch": 0.1, "exit": 0.2, "final": 0.05}}, "host_assumed_ms needs every one of"),
    ({"host": "digits_ee", "host_assumed_ms": {"batch": 0, "exit": 0, "leave": 0, "final": 0}}, "give one of 'host'"),
    ({"host_assumed_ms": {"batch": -1, "exit": 0, "leave": 0, "final": 0}}, "exits.host_assumed_ms.batch"),
])
def test_assumed_host_times_are_checked(servesim, tmp_path, extra, message):
    config = {"trace": {"kind": "poisson", "rate": 10.0, "count": 5},
              "model": {"profile": "builtin:cpu_digits_ee", "name": "digits_ee"},
              "exits": {"ramps": {"block1": "ramp1", "block2": "ramp2", "block3": "ramp3"},
                        "behaviour": {"kind": "fixed_exits", "shares": [0, 0, 0, 1]}, "policy": "never", **extra}}
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(config))
    outcome = servesim("check", tmp_path / "x.yaml")
    assert outcome.rc == 2 and len(outcome.err_lines) == 1 and message in outcome.err_lines[0], outcome.err_lines


def test_padded_batches_with_exits_are_refused(servesim, tmp_path):
    config = {"trace": {"kind": "poisson", "rate": 10.0, "count": 5},
              "model": {"profile": "builtin:cpu_digits_ee", "name": "digits_ee"},
              "serving": {"batching": {"policy": "dynamic", "max_batch": 4, "allowed_sizes": [2, 4]}},
              "exits": {"ramps": {"block1": "ramp1", "block2": "ramp2", "block3": "ramp3"},
                        "behaviour": {"kind": "fixed_exits", "shares": [0, 0, 0, 1]}, "policy": "never"}}
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(config))
    outcome = servesim("check", tmp_path / "x.yaml")
    assert outcome.rc == 2 and "serving.batching.allowed_sizes: padded batches are modelled" in outcome.err


def _trace_exits_config(trace: dict, exits: int = 4) -> dict:
    return {"name": "replay", "trace": trace, "model": {"profile": "builtin:cpu_digits_ee", "name": "digits_ee"},
            "exits": {"ramps": {"block1": "ramp1", "block2": "ramp2", "block3": "ramp3"},
                      "behaviour": {"kind": "trace_exits", "exits": exits},
                      "policy": {"name": "confidence", "threshold": 0.5}}}


def test_a_trace_gives_each_request_its_exit(servesim, tmp_path):
    """A measured server's log replayed: request k leaves at the exit its line gives."""
    (tmp_path / "log.txt").write_text("0.10,1\n0.20,3\n0.30,2\n0.40,4\n0.50,4\n0.60,1\n")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(_trace_exits_config(
        {"kind": "file", "path": "log.txt", "format": "timestamps"})))
    assert servesim("run", tmp_path / "r.yaml", "--out", tmp_path / "out", "--quiet").rc == 0
    [path] = (tmp_path / "out").glob("*/requests.parquet")
    assert pd.read_parquet(path)["exit_stage"].tolist() == [0, 2, 1, 3, 3, 0]  # counted from 0 in the table


@pytest.mark.parametrize("log, trace, message", [
    ("0.1,5\n", None, "request 0 of"),
    ("0.1\n", None, "has none (a timestamps file with 'time,exit' lines has it)"),
    (None, {"kind": "poisson", "rate": 10.0, "count": 5}, "trace_exits takes each request's exit from a timestamps"),
])
def test_trace_exits_are_checked_before_any_run(servesim, tmp_path, log, trace, message):
    if log is not None:
        (tmp_path / "log.txt").write_text(log)
    config = _trace_exits_config(trace or {"kind": "file", "path": "log.txt", "format": "timestamps"})
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(config))
    outcome = servesim("check", tmp_path / "r.yaml")
    assert outcome.rc == 2 and len(outcome.err_lines) == 1 and message in outcome.err_lines[0], outcome.err_lines
