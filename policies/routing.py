"""Routers: which replica an arriving request joins.

A router sees the outstanding requests of every replica (queued plus in service) at the
moment of arrival — what a load balancer in front of real replicas can count — and
returns an index. Routers that draw random numbers take their own ``numpy`` Generator so
runs are reproducible and independent of each other.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class Router(Protocol):
    def choose(self, loads: Sequence[int]) -> int:
        """Index of the replica the next request joins; ``loads[i]`` is replica i's count."""


class RoundRobin:
    """Replicas in turn, blind to load."""

    def __init__(self) -> None:
        self._next = 0

    def choose(self, loads: Sequence[int]) -> int:
        i = self._next
        self._next = (i + 1) % len(loads)
        return i


class _RandomBlock:
    """Uniform random numbers drawn from a Generator in blocks: one numpy call per 4096
    decisions instead of one per request keeps routing off the engine's profile."""

    def __init__(self, rng: np.random.Generator, block: int = 4096):
        self._rng = rng
        self._block = block
        self._values: list[float] = []
        self._pos = 0

    def next(self) -> float:
        if self._pos == len(self._values):
            self._values = self._rng.random(self._block).tolist()
            self._pos = 0
        value = self._values[self._pos]
        self._pos += 1
        return value


class RandomRouter:
    """A uniformly random replica."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._uniform = _RandomBlock(rng)

    def choose(self, loads: Sequence[int]) -> int:
        return int(self._uniform.next() * len(loads))


class JoinShortestQueue:
    """The replica with the fewest outstanding requests; ties go to the lowest index."""

    def choose(self, loads: Sequence[int]) -> int:
        # Counts are never negative, so the first idle replica is the choice: at ordinary
        # load there is one, found by a short scan instead of a whole ``min``.
        return loads.index(0) if 0 in loads else loads.index(min(loads))


class PowerOfTwoChoices:
    """Two distinct replicas at random, the less loaded of them (Mitzenmacher): nearly
    JSQ's queueing at the cost of two load probes."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._uniform = _RandomBlock(rng)

    def choose(self, loads: Sequence[int]) -> int:
        n = len(loads)
        if n == 1:
            return 0
        a = int(self._uniform.next() * n)
        b = int(self._uniform.next() * (n - 1))
        if b >= a:
            b += 1
        return a if loads[a] <= loads[b] else b
