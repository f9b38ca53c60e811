"""A request queue in front of one or more workers.

Per-replica routing gives each worker its own queue; a shared queue (one queue that all
replicas pull from, as Triton's model instances share one scheduler queue) gives M/M/c
behaviour. Either way a worker only ever sees a :class:`RequestQueue`.
"""

from __future__ import annotations

from collections import deque


class RequestQueue:
    __slots__ = ("index", "items", "queued_items", "waiting")

    def __init__(self, index: int):
        self.index = index               # position in the dispatcher's list (and loads)
        self.items: deque[int] = deque()  # request ids, oldest first
        # Sum of the sizes of the queued requests, kept only when requests carry sizes:
        # without them it is len(items), which the worker reads instead.
        self.queued_items = 0
        self.waiting: list = []          # workers of this queue waiting for work, longest first
