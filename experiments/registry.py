"""Registries: the one place that maps a YAML name to the class that implements it.

A YAML file can only *name* things listed here; it never imports or executes code.
Each entry is a pydantic model (the name's parameters, validated with precise errors)
whose ``build(...)`` makes the object. Adding a policy is one decorated class in
:mod:`experiments.specs`, or in a user's own code (a notebook, say): the config models
are built once, at import, so a name registered later retypes the fields that accept
"one of this registry's entries" and rebuilds the models that hold them (:func:`track`).
Registering a name twice is an error, not a silent override.
"""

from __future__ import annotations

from typing import Annotated, Any, Union, get_args

from pydantic import BaseModel, Field


class Registry:
    def __init__(self, kind: str, key: str):
        self.kind = kind      # what is registered, for messages ("batching policy")
        self.key = key        # the YAML field that names the entry ("policy")
        self._entries: dict[str, type[BaseModel]] = {}
        self._fields: list[tuple[type[BaseModel], str]] = []  # (model, field) typed union(), once tracked

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
        if self._fields:
            self._retype()
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

    def _retype(self) -> None:
        """Every field typed :meth:`union` takes the entries registered since, and every
        tracked model is rebuilt, inner ones first (an outer model holds a copy of its
        inner models' validators from when it was built)."""
        members = tuple(self._entries.values())
        for model, name in self._fields:
            info = model.model_fields[name]
            info.annotation = members[0] if len(members) == 1 else Union[members]
            info.discriminator = None if len(members) == 1 else self.key
        for model in _tracked:
            model.model_rebuild(force=True)


_tracked: list[type[BaseModel]] = []  # the models under the tracked roots, inner ones first


def _models_under(root: type[BaseModel]) -> list[type[BaseModel]]:
    """``root`` and every model its fields can hold, each after the models it holds."""
    seen: set[type[BaseModel]] = set()
    order: list[type[BaseModel]] = []

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in seen:
                seen.add(annotation)
                for info in annotation.model_fields.values():
                    visit(info.annotation)
                order.append(annotation)
        else:
            for arg in get_args(annotation):
                visit(arg)

    visit(root)
    return order


def track(root: type[BaseModel]) -> None:
    """Let names registered from now on be valid under ``root`` (the experiment config):
    each registry learns which fields hold "one of its entries"."""
    _tracked[:] = _models_under(root)
    for model in _tracked:
        for name, info in model.model_fields.items():
            held = set(get_args(info.annotation)) or {info.annotation}
            for registry in REGISTRIES:
                if registry._entries and held == set(registry._entries.values()):
                    registry._fields.append((model, name))


TRACES = Registry("trace kind", "kind")
NOISE = Registry("noise kind", "kind")
BATCHING = Registry("batching policy", "policy")
ROUTERS = Registry("router", "name")
BEHAVIOUR = Registry("behaviour source", "kind")
EXIT_POLICIES = Registry("exit policy", "name")
PREDICTORS = Registry("load predictor", "kind")
ADAPTERS = Registry("adapter", "name")
LOADS = Registry("load kind", "kind")  # load that is not a trace: closed-loop clients (experiments.load_specs)
REGISTRIES = (TRACES, NOISE, BATCHING, ROUTERS, BEHAVIOUR, EXIT_POLICIES, PREDICTORS, ADAPTERS, LOADS)
