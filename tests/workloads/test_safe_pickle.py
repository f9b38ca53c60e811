"""Apparate's pickles are read without running their code (issue 21): each payload below
would create a marker file if unpickled the ordinary way (checked, so the payloads are
real), and the restricted unpickler refuses it, naming the global, before it runs."""

import collections
import contextlib
import io
import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from servesim.experiments import cli
from servesim.workloads import safe_pickle
from servesim.workloads.behaviour import BehaviourError, from_apparate_pickle


class Reduces:
    """An object that pickles as ``function(*args)``: what an attacker's file holds."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _chain(module: str, attribute: str, *args: str) -> bytes:
    """Protocol-0 bytes for ``getattr(__import__(module), attribute)(*args)``: the
    classic payload, spelt without any class of this test's."""
    call = "".join(f"V{a}\n" for a in args)
    return (f"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(V{module}\ntRV{attribute}\ntR({call}tR.").encode()


def payloads(marker: Path) -> dict[str, bytes]:
    touch = f"touch {shlex.quote(str(marker))}"
    code = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": pickle.dumps(Reduces(os.system, touch)),
        "subprocess.call": pickle.dumps(Reduces(subprocess.call, ["touch", str(marker)])),
        "subprocess.Popen": pickle.dumps(Reduces(subprocess.Popen, ["touch", str(marker)])),
        "builtins.eval": pickle.dumps(Reduces(eval, code)),
        "builtins.exec": pickle.dumps(Reduces(exec, code)),
        "__import__ chain": _chain("os", "system", touch),
        "in a dict": pickle.dumps({"conf": [[0.5]], "acc": [[True]], "x": Reduces(os.system, touch)}),
        "in an object array": pickle.dumps({"conf": np.array([Reduces(os.system, touch)], dtype=object),
                                            "acc": [[True]]}),
        "in a protocol-2 object array": pickle.dumps(np.array([1, Reduces(eval, code)], dtype=object), protocol=2),
    }


REFUSED = {"os.system": ("posix.system", "nt.system"), "subprocess.call": ("subprocess.call",),
           "subprocess.Popen": ("subprocess.Popen",), "builtins.eval": ("builtins.eval",),
           "builtins.exec": ("builtins.exec",), "__import__ chain": ("builtins.getattr",),
           "in a dict": ("posix.system", "nt.system"), "in an object array": ("posix.system", "nt.system"),
           "in a protocol-2 object array": ("__builtin__.eval",)}  # Python 2's name, as protocol 2 writes


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_the_payloads_are_real(tmp_path, name):
    """Unpickled the ordinary way, in a child process, each payload creates the marker."""
    marker = tmp_path / "marker"
    data = payloads(marker)[name]
    subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
                   input=data, check=False, capture_output=True, timeout=60)
    assert marker.exists()


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_payloads_are_refused_and_nothing_runs(tmp_path, name):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pickle"
    path.write_bytes(payloads(marker)[name])
    with pytest.raises(BehaviourError) as info:
        from_apparate_pickle(path)
    message = str(info.value)
    assert message.startswith(f"{path}: refused to unpickle: it tries to load the global "), message
    assert any(g in message for g in REFUSED[name]), message
    assert "\n" not in message
    assert not marker.exists()


def test_check_refuses_an_evil_behaviour_file_in_one_line(tmp_path):
    """The report's case: ``servesim check`` on a YAML naming a hostile pickle."""
    marker = tmp_path / "marker"
    (tmp_path / "evil.pickle").write_bytes(payloads(marker)["os.system"])
    config = {"trace": {"kind": "poisson", "rate": 100.0, "count": 50},
              "model": {"profile": "builtin:cpu_digits_ee", "name": "digits_ee"},
              "exits": {"ramps": {"block1": "ramp1", "block2": "ramp2", "block3": "ramp3"},
                        "behaviour": {"kind": "file", "path": "evil.pickle", "format": "apparate-pickle"},
                        "policy": "never"}}
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump(config))
    for command in (["check", path], ["run", path, "--out", tmp_path / "out", "--quiet"]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = cli.main([str(a) for a in command])
        lines = err.getvalue().strip().splitlines()
        assert rc == 2 and len(lines) == 1, (command, lines)
        assert "evil.pickle: refused to unpickle" in lines[0] and ".system" in lines[0], lines
        assert not marker.exists()


def _apparate_shaped() -> dict:
    """What Apparate's artefacts hold: per-ramp lists or arrays, numpy scalars inside."""
    return {"conf": collections.OrderedDict([(0, [np.float32(0.9), np.float64(0.2), 0.7]),
                                              (1, np.array([0.95, 0.4, 0.8], dtype=np.float32)),
                                              (2, [None, None, None])]),
            "acc": collections.defaultdict(list, {0: [np.bool_(True), False, True], 1: np.array([1, 0, 1]),
                                                  2: (True, True, True)})}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_apparate_shaped_pickles_still_load(tmp_path, protocol):
    path = tmp_path / "p.pickle"
    path.write_bytes(pickle.dumps(_apparate_shaped(), protocol=protocol))
    table = from_apparate_pickle(path)
    assert table.exit_names == ("ramp0", "ramp1", "final")
    np.testing.assert_allclose(table.confidence, [[0.9, 0.95, 1.0], [0.2, 0.4, 1.0], [0.7, 0.8, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(table.agrees[:, 0], [True, False, True])


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_values_round_trip(protocol):
    values = [np.arange(6.0).reshape(2, 3), np.array([True, False]), np.asfortranarray(np.eye(3, dtype=np.float32)),
              np.float32(1.5), np.int64(-3), np.bool_(False), np.array(["a", "bc"]),
              np.array([1, [2, 3], {"k": 4.0}], dtype=object), {1, 2}, frozenset({3}), b"raw", bytearray(b"x"), 2j]
    loaded = safe_pickle.RestrictedUnpickler(io.BytesIO(pickle.dumps(values, protocol=protocol))).load()
    for want, got in zip(values, loaded):
        assert type(got) is type(want)
        if isinstance(want, np.ndarray) and want.dtype != object:
            np.testing.assert_array_equal(got, want)
            assert got.dtype == want.dtype
        elif not isinstance(want, np.ndarray):
            assert got == want
    assert loaded[7].tolist() == values[7].tolist()


def test_numpy_subclasses_are_refused():
    """``_reconstruct`` builds the subtype it is given: only ndarray may be given."""
    with pytest.raises(safe_pickle.RefusedGlobal, match="numpy.*(memmap|matrix|recarray)"):
        safe_pickle.RestrictedUnpickler(io.BytesIO(pickle.dumps(np.rec.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")])))).load()


def test_persistent_references_are_refused():
    data = b"(lp0\nPsome-id\na."  # protocol 0: a list holding a persistent reference
    with pytest.raises(pickle.UnpicklingError, match="persistent reference"):
        safe_pickle.RestrictedUnpickler(io.BytesIO(data)).load()
