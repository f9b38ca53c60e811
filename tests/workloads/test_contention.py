"""The contention table (workloads/contention.py): its file beside the profile, its
checks, its lookups, and how the CPU profiler measures it (workloads/profiler_cpu.py)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from servesim.workloads import CostModel, Profile, ProfileError, load_profile
from servesim.workloads.contention import NoContentionModel, contention_path
from servesim.workloads.profiler_cpu import BATCH_SIZES, concurrent_ms, measure, slowdowns

METADATA = {"device": "cpu:test", "dtype": "float32", "framework": "none", "date": "2024-01-01",
            "execution_mode": "eager"}
ROWS = [("hw", "m", "s", b, 1.0 * b, 1.0 * b, 1.0 * b, 3) for b in (1, 4, 16)]


def point(k, b, slowdown, model="m"):
    return {"hardware": "hw", "model": model, "instances": k, "batch_size": b, "slowdown": slowdown, "repeats": 3}


def test_a_profile_and_its_contention_table_round_trip(tmp_path):
    rows = [point(k, b, 1 + 0.1 * k * b) for k in (2, 3) for b in (1, 4, 16)]
    profile = Profile.from_rows(ROWS, METADATA, contention=rows)
    profile.save(tmp_path / "p.csv")
    assert contention_path(tmp_path / "p.csv").name == "p.contention.csv"
    loaded = load_profile(tmp_path / "p.csv")
    assert loaded.contention == profile.contention
    table = loaded.contention["hw", "m"]
    assert (table.max_instances, table.sizes) == (3, (1, 4, 16))
    f = table.factors()
    assert f[1] == [1.0] * 17  # one batch alone: the profile's own time
    assert f[2][4] == pytest.approx(1.8) and f[3][16] == pytest.approx(5.8)
    assert f[2][10] == pytest.approx(1.8 + (10 - 4) / 12 * (4.2 - 1.8))  # linear between measured sizes
    # saving it without a table removes the stale file
    Profile.from_rows(ROWS, METADATA).save(tmp_path / "p.csv")
    assert not contention_path(tmp_path / "p.csv").exists() and load_profile(tmp_path / "p.csv").contention == {}


def test_a_cost_model_refuses_instances_its_profile_did_not_measure():
    bare = CostModel(Profile.from_rows(ROWS, METADATA), "m")
    assert bare.contention(1, "serving.instances") is None  # one instance: nothing to contend with
    with pytest.raises(NoContentionModel, match=r"^serving\.instances: 2 instances of 'm' share one 'hw' device, "
                                                r"and the profile <memory> has no measured contention"):
        bare.contention(2, "serving.instances")
    measured = CostModel(Profile.from_rows(ROWS, METADATA, contention=[point(2, b, 1.2) for b in (1, 4)]), "m")
    assert measured.contention(2, "x").max_instances == 2
    with pytest.raises(NoContentionModel, match="measured contention up to 2 instances only"):
        measured.contention(4, "x")


@pytest.mark.parametrize("text, message", [
    ("hardware,model,instances,batch_size,slowdown,repeats\nhw,m,2,1,abc,3\n",
     r"line 2: slowdown 'abc' must be a finite number > 0"),
    ("hardware,model,instances,batch_size,slowdown,repeats\nhw,m,2,1,-1,3\n", r"line 2: slowdown '-1'"),
    ("hardware,model,instances,batch_size,slowdown,repeats\nhw,m,1,1,1.2,3\nhw,m,2,1,1.5,3\n",
     r"line 2: slowdown '1.2' at instances 1; .* 1 by definition"),
    ("hardware,model,instances,batch_size,slowdown,repeats\nhw,m,0,1,1.2,3\n", r"line 2: instances '0' must be"),
    ("hardware,model,instances,batch_size,slowdown,repeats\nhw,m,2,1,1.2,3\nhw,m,2,1,1.3,3\n",
     r"line 3: duplicate \(hardware, model, instances, batch_size\)"),
    ("hardware,model,instances,batch_size,slowdown,repeats\nhw,m,2,1,1.2,3\nhw,m,3,4,1.3,3\n",
     r"every count from 2 up needs the same sizes"),
    ("hardware,model,instances,batch_size,slowdown,repeats\nhw,other,2,1,1.2,3\n",
     r"contention of model 'other' on 'hw', which the profile has no rows for"),
    ("hardware,model,k,batch_size,slowdown,repeats\n", r"line 1: the header must be"),
    ("hardware,model,instances,batch_size,slowdown,repeats\nhw,m,2,1\n", r"line 2: 4 values for 6 columns"),
])
def test_a_bad_contention_file_is_refused_naming_its_line(tmp_path, text, message):
    Profile.from_rows(ROWS, METADATA).save(tmp_path / "p.csv")
    contention_path(tmp_path / "p.csv").write_text(text)
    with pytest.raises(ProfileError, match=message):
        load_profile(tmp_path / "p.csv")


class FairDevice:
    """A device that runs one call at a time, first come first served (ticket order), for
    ``seconds`` each: k callers take k times as long per call (pure time-sharing)."""

    def __init__(self, seconds: float):
        self.seconds, self.turn, self.tickets = seconds, 0, 0
        self.changed = threading.Condition()

    def __call__(self) -> None:
        with self.changed:
            ticket, self.tickets = self.tickets, self.tickets + 1
            self.changed.wait_for(lambda: self.turn == ticket)
        time.sleep(self.seconds)
        with self.changed:
            self.turn += 1
            self.changed.notify_all()


def test_the_profiler_measures_time_sharing_as_k_and_free_streams_as_1():
    # sleeps of 20 ms, long beside a loaded machine's wake-up delays (a few ms), which add
    # to calls alone and shared alike: the ratios are held within 25% of k and of 1
    shared = slowdowns(FairDevice(0.02), 3, repeats=8, warmup=1)
    assert shared == [pytest.approx(2, rel=0.25), pytest.approx(3, rel=0.25)]
    free = slowdowns(lambda: time.sleep(0.02), 3, repeats=8, warmup=1)
    assert free == [pytest.approx(1, rel=0.25)] * 2


def test_only_calls_that_ran_beside_all_the_others_count():
    # calls of 20 ms, long beside a loaded machine's wake-up delays (a few ms): with 2 ms
    # ones, at load 4 on 2 cores, a thread late for its next ticket let the other take two
    # in a row, and the streams no longer alternated
    times = concurrent_ms(FairDevice(0.02), 2, repeats=6, warmup=0)
    # the first stream's 6 calls, and the other's that ended before it finished (5 or 6)
    assert 11 <= times.size <= 12 and (times > 0).all()


def test_the_cpu_profiler_writes_a_contention_table_for_every_batch_size(tmp_path):
    profile = measure(repeats=3, warmup=1, threads=1, instances=2)
    table = profile.contention["cpu", "mlp3"]
    assert table.sizes == BATCH_SIZES and table.max_instances == 2
    # (its values are not bounded here: 3 calls a point on a loaded 2-core test machine say
    # little; the measurement itself is held to known answers by the tests above)
    assert all(np.isfinite(s) and s > 0 for s in table.slowdown[0]), table.slowdown
    assert "contention" in profile.metadata
    profile.save(tmp_path / "cpu.csv")
    assert load_profile(tmp_path / "cpu.csv").contention == profile.contention
    assert measure(repeats=2, warmup=0, threads=1).contention == {}  # one instance: nothing measured
