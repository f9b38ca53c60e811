"""servesim installs under its own name only: its folders (sim/, traces/, ...) are
servesim.sim, servesim.traces, ... once installed, so it can sit beside any other
distribution, PyPI's `traces` among them."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERIC = {"sim", "workloads", "policies", "traces", "experiments"}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_no_code_imports_a_folder_by_its_generic_name():
    """Run from the repository's root, `import sim` would find the folder and load a second
    copy of every module (with registries of its own): everything says servesim.sim."""
    wrong = [f"{path.relative_to(ROOT)}: {name}"
             for folder in ("servesim", *sorted(GENERIC), "tests", "bench", "docs")
             for path in sorted((ROOT / folder).rglob("*.py"))
             for name in _imports(path) if name.split(".")[0] in GENERIC]
    assert not wrong, wrong


def test_installs_beside_pypis_traces_package(tmp_path):
    """A real (not editable) install into a fresh environment that already holds PyPI's
    `traces`: both import, each its own, and the installed servesim finds its shipped
    experiments and profiles away from the source tree."""
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, capture_output=True)
    python = env / "bin" / "python"
    got = subprocess.run([str(python), "-m", "pip", "install", "-q", "traces"], capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"PyPI's traces package could not be installed here: {got.stderr.strip()[-300:]}")
    # servesim's own dependencies come from this environment (a path entry, not a copy)
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                        text=True).strip())
    (site / "zz_servesim_deps.pth").write_text("".join(f"{p}\n" for p in sys.path if p.endswith("site-packages")))
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(ROOT)], check=True,
                   capture_output=True, text=True)
    probe = """
import sys, traces, servesim
from servesim import traces as arrivals
assert hasattr(traces, "TimeSeries"), traces.__file__        # PyPI's traces
assert hasattr(arrivals, "poisson"), arrivals.__file__        # servesim's arrivals
assert not {"sim", "workloads", "policies", "experiments"} & set(sys.modules), sorted(sys.modules)
print(traces.__file__); print(arrivals.__file__)
"""
    out = subprocess.run([str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert all(str(site) in line for line in out.stdout.splitlines())
    shipped = site / "servesim" / "experiments" / "quickstart.yaml"
    check = subprocess.run([str(env / "bin" / "servesim"), "check", str(shipped)], cwd=tmp_path,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
