"""Guards that turn a run gone wrong into one failing test instead of a stuck or killed
suite: a hang (:func:`time_limit`) and an allocation without end (:func:`memory_cap`).
On sys.path through pytest's ``pythonpath`` setting (pyproject.toml)."""

from __future__ import annotations

import contextlib
import resource
import signal


@contextlib.contextmanager
def time_limit(seconds: int):
    """Raise TimeoutError in the block after ``seconds``. Uses SIGALRM, so it only
    guards code run on the main thread (pytest's default)."""
    def _raise(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a hang (a livelock?)")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def memory_cap(extra_bytes: int = 6 * 2**30):
    """Cap this process's address space at what it maps now plus ``extra_bytes``, so
    that code allocating without end fails with a MemoryError in the block instead of
    the machine's OOM killer ending the whole suite."""
    with open("/proc/self/status") as f:
        used = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (used + extra_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
