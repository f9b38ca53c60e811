"""Where a sweep's runs execute: in this process, on a local process pool, or on Ray.

An executor takes a function and the sweep's runs and yields each run's result as soon
as it is ready, in whatever order they finish; the sweep writes each one to disk before
asking for the next, so what has finished is kept whatever happens later. The function
never raises for a failing run (it returns the failure as data); an executor only has
to report a run it lost itself — a worker process killed, a Ray node gone — through
``lost(run, exc)``, which turns that into a result too.

Results travel back as plain data (:class:`experiments.store.RunFiles`), so a run gives
the same bytes wherever it ran, and only the sweep's process writes the output folder:
Ray's workers need no shared file system for results (they do read the experiment's
traces and profiles, at the same paths as the driver).
"""

from __future__ import annotations

import logging
import socket
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Iterator, Optional, Sequence

from .config import ConfigError

LOCAL, RAY = "local", "ray"
EXECUTORS = (LOCAL, RAY)


class Executor:
    """The interface: ``with executor:`` holds what it needs (a Ray connection) for the
    sweep; ``map(fn, runs, lost)`` yields ``fn(run)`` for each run as it finishes."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


class InProcess(Executor):
    """One run after another in this process (``--jobs 1``): the simplest to debug, and
    the only one that can show a single run's own progress."""

    def map(self, fn: Callable, runs: Sequence, lost: Callable) -> Iterator:
        for run in runs:
            yield fn(run)


class ProcessPool(Executor):
    """Runs on ``jobs`` local processes."""

    def __init__(self, jobs: int):
        self.jobs = jobs

    def map(self, fn: Callable, runs: Sequence, lost: Callable) -> Iterator:
        with ProcessPoolExecutor(max_workers=self.jobs) as pool:
            futures = {pool.submit(fn, run): run for run in runs}
            for future in as_completed(futures):
                run = futures.pop(future)  # a finished run's files are not held to the end of the sweep
                try:
                    result = future.result()
                except Exception as exc:  # the worker died (BrokenProcessPool), not the run's own error
                    result = lost(run, exc)
                yield result


class RayExecutor(Executor):
    """Runs as Ray tasks of one CPU each: on a new local Ray instance of ``jobs`` CPUs
    (all of this machine's when ``jobs`` is None), or on the cluster at ``address``.
    A local instance it started is shut down at the end."""

    def __init__(self, jobs: Optional[int] = None, address: Optional[str] = None):
        self.jobs, self.address = jobs, address
        self.ray = None

    def __enter__(self):
        self.ray = self._connect()
        return self

    def __exit__(self, *exc) -> None:
        if not self.address:
            self.ray.shutdown()

    def _connect(self):
        try:
            import ray  # noqa: PLC0415  (the `ray` extra)
        except ImportError:
            raise ConfigError("--executor ray: Ray is not installed: pip install 'servesim[ray]'") from None
        if self.address:
            _reachable(self.address)
        # "local" starts a new instance here: without it, ray.init would follow $RAY_ADDRESS
        # or a running local cluster, and the sweep would trust a cluster nobody named
        options = {"address": self.address} if self.address else {"address": "local", "num_cpus": self.jobs}
        try:
            ray.init(**options, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     ignore_reinit_error=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"--address {self.address}" if self.address else "--executor ray"
            raise ConfigError(f"{where}: cannot start or reach Ray: {str(exc).splitlines()[0]}") from None
        return ray

    def map(self, fn: Callable, runs: Sequence, lost: Callable) -> Iterator:
        ray = self.ray
        task, shared = ray.remote(num_cpus=1, max_retries=0)(_apply), ray.put(fn)
        pending = {task.remote(shared, run): run for run in runs}
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            run = pending.pop(ready)
            try:
                yield ray.get(ready)
            except Exception as exc:  # the task's worker or node died
                yield lost(run, exc)


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse an address nothing listens on: Ray itself would retry it for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not port.isdecimal():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc})") from None


def _apply(fn: Callable, run):
    """A Ray task: ``fn(run)`` (Ray takes plain functions only, not partials)."""
    return fn(run)


def make_executor(name: str, jobs: Optional[int] = None, address: Optional[str] = None):
    """The executor ``--executor NAME --jobs N [--address ADDR]`` asks for."""
    if name not in EXECUTORS:
        raise ConfigError(f"--executor: unknown executor {name!r}; known: {', '.join(EXECUTORS)}")
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs: must be at least 1 (got {jobs})")
    if name == RAY:
        return RayExecutor(jobs, address)
    if address is not None:
        raise ConfigError(f"--address: only the ray executor connects to a cluster (got {address!r} with "
                          f"--executor {name})")
    return InProcess() if (jobs or 1) == 1 else ProcessPool(jobs)
