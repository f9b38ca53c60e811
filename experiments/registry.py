"""Registries: the one place that maps a YAML name to the class that implements it.

A YAML file can only *name* things listed here; it never imports or executes code.
Each entry is a pydantic model (the name's parameters, validated with precise errors)
whose ``build(...)`` makes the object. Adding a policy is one decorated class in
:mod:`experiments.specs`; registering a name twice is an error, not a silent override.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union, get_args

from pydantic import BaseModel, Field


class Registry:
    def __init__(self, kind: str, key: str):
        self.kind = kind      # what is registered, for messages ("batching policy")
        self.key = key        # the YAML field that names the entry ("policy")
        self._entries: dict[str, type[BaseModel]] = {}

    def register(self, cls: type[BaseModel]) -> type[BaseModel]:
        """Class decorator; the name is the ``Literal`` default of the ``key`` field."""
        field = cls.model_fields.get(self.key)
        names = get_args(field.annotation) if field is not None else ()
        if len(names) != 1:
            raise TypeError(f"{cls.__name__} needs a field {self.key}: Literal['<name>']")
        name = names[0]
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice "
                             f"({self._entries[name].__name__} and {cls.__name__})")
        self._entries[name] = cls
        return cls

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> type[BaseModel]:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def union(self) -> Any:
        """The pydantic type of "one of the registered entries", chosen by ``key``."""
        members = tuple(self._entries.values())
        if len(members) == 1:
            return members[0]
        return Annotated[Union[members], Field(discriminator=self.key)]

    def name_type(self) -> Any:
        """A ``Literal`` of the registered names (for entries given by name alone)."""
        return Literal[tuple(self.names())]


TRACES = Registry("trace kind", "kind")
NOISE = Registry("noise kind", "kind")
BATCHING = Registry("batching policy", "policy")
ROUTERS = Registry("router", "name")
BEHAVIOUR = Registry("behaviour source", "kind")
EXIT_POLICIES = Registry("exit policy", "name")
PREDICTORS = Registry("load predictor", "kind")
ADAPTERS = Registry("adapter", "name")
