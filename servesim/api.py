"""The Python API: run an experiment from code and read its results as DataFrames.

A sweep run from Python is the same as ``servesim run``: the same validation, the same
output folder (so a notebook's run can be re-plotted, resumed or compared from the
command line), the same numbers for the same config and seed. What the API adds is the
reading back: :class:`Sweep` and :class:`RunOutput` open the folder's files as pandas
DataFrames and dicts, lazily, so a 200-run sweep is not loaded whole to look at one run.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import pandas as pd
import yaml

from servesim.experiments import store
from servesim.experiments.plots import plot_experiment
from servesim.experiments.runner import run_experiment
from servesim.experiments.seeds import by_point


class ServesimWarning(UserWarning):
    """What the command line prints as ``warning: ...`` (an unfair comparison, a run that
    fell behind its arrivals, finished runs not kept by ``resume``)."""


@dataclass(frozen=True)
class RunOutput:
    """One run's folder: its config, summary and per-request table, read when asked for."""

    name: str
    folder: Path

    @property
    def config(self) -> dict:
        """The run's whole config, every default filled in (``config.yaml``)."""
        return yaml.safe_load((self.folder / store.CONFIG).read_text())

    @property
    def summary(self) -> dict:
        """The run's figures (``summary.json``): latency in ms, cost, accuracy, ..."""
        path = self.folder / store.SUMMARY
        if not path.exists():
            raise FileNotFoundError(f"{path}: run {self.name} did not finish (see error.txt in its folder)")
        return json.loads(path.read_text())

    @property
    def requests(self) -> pd.DataFrame:
        """One row per request: arrival, start and finish times (s), replica, batch size,
        status, and the exit columns of a model with exits (``requests.parquet``)."""
        return store.read_requests(self.folder / store.REQUESTS)


@dataclass(frozen=True)
class Sweep:
    """An experiment's output folder: ``results`` has one row per run (results.csv),
    ``by_point`` one per sweep point averaged over its seeds, with 95% intervals."""

    out: Path
    results: pd.DataFrame

    @property
    def by_point(self) -> pd.DataFrame:
        """Per sweep point: ``seeds``, each figure's mean, ``<figure>_ci95`` (the half-width
        of its Student-t 95% interval over the seeds), ``_min`` and ``_max``."""
        return by_point(self.results)

    @property
    def runs(self) -> list[RunOutput]:
        """Every run of the sweep, finished or failed, in results.csv's order."""
        return [RunOutput(name, self.out / name) for name in self.results["run"]]

    @property
    def failed(self) -> pd.DataFrame:
        """The rows of the runs that failed, with their ``error``."""
        return self.results[self.results["status"] != "ok"]

    def __getitem__(self, name: str) -> RunOutput:
        if name not in set(self.results["run"]):
            raise KeyError(f"no run {name!r} in {self.out}; runs: {', '.join(self.results['run'][:5])} ...")
        return RunOutput(name, self.out / name)

    def plot(self) -> list[Path]:
        """(Re)draw the sweep's plots into ``out/plots``; returns the files."""
        return plot_experiment(self.out)


def read(out: Union[str, Path]) -> Sweep:
    """The sweep in an output folder written by ``servesim run`` or :func:`run`."""
    return Sweep(Path(out), store.read_folder(out))


def run(config: Union[str, Path, dict], out: Union[str, Path, None] = None, *, base_dir: Union[str, Path] = ".",
        seed: Optional[int] = None, jobs: Optional[int] = 1, resume: bool = False, force: bool = False,
        plots: bool = True, progress: bool = False) -> Sweep:
    """Run every point and seed of an experiment, as ``servesim run`` does, and return it.

    ``config`` is a YAML file's path, or the config as a mapping (the same keys as the
    YAML), whose relative paths (profiles, traces) are read from ``base_dir``. ``out`` is
    the output folder (default: a new temporary folder, see ``Sweep.out``); ``seed`` runs
    that one seed only; ``jobs`` runs that many at once on local processes (``None``: one
    per core); ``resume`` keeps the finished runs already in ``out``, ``force`` recomputes
    them. A bad config raises :class:`servesim.ConfigError` with the key path in its
    message; a run that fails is a row with ``status`` ``failed``, the others are kept.
    Warnings are :class:`ServesimWarning`.
    """
    out = Path(tempfile.mkdtemp(prefix="servesim-")) if out is None else Path(out)
    outcome = run_experiment(config, out, jobs=jobs, seed=seed, force=force, resume=resume, show_progress=progress,
                             warn=lambda line: warnings.warn(line, ServesimWarning, stacklevel=3),
                             base_dir=base_dir)
    if plots and any(row["status"] == "ok" for row in outcome.rows):
        plot_experiment(out)
    return read(out)
