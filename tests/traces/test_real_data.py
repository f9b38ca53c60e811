"""The real public traces in ../shared/data (next to the repository), skipped when absent.

The files are read in place and never copied into the project.
"""

import time
from pathlib import Path

import numpy as np
import pytest

from servesim.traces import describe, load, load_azure_llm, load_twitter_counts

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TWITTER = DATA / "twitter-trace" / "workload.txt"
AZURE_LLM = DATA / "azure-llm-inference-2023"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


def test_twitter_trace():
    start = time.perf_counter()
    counts = load_twitter_counts(need(TWITTER))
    seconds = time.perf_counter() - start
    assert counts.size == 1_899_061 and counts.dtype == np.int64
    assert abs(counts.mean() - 63.6) < 0.1
    assert counts.min() >= 0
    assert seconds < 10  # about 0.3 s; generous for a loaded CI machine


def test_twitter_window_through_the_registry():
    counts = load_twitter_counts(need(TWITTER))
    trace = load(TWITTER, "twitter", rng=np.random.default_rng(0), window=(3600, 4800))
    assert len(trace) == counts[3600:4800].sum()
    assert trace.times.max() < 1200


@pytest.mark.parametrize("name, requests", [("code", 8_819), ("conv", 19_366)])
def test_azure_llm_trace(name, requests):
    path = need(AZURE_LLM / f"AzureLLMInferenceTrace_{name}.csv")
    trace = load_azure_llm(path)
    assert len(trace) == requests
    assert trace.times[0] == 0.0
    assert 50 * 60 < trace.duration < 65 * 60  # about one hour (57-58 min in these files)
    for column in ("ContextTokens", "GeneratedTokens"):
        assert trace.columns[column].dtype == np.int64 and trace.columns[column].min() >= 0
    assert describe(trace)["requests"] == requests
    assert len(load(path, "azure-llm")) == requests
