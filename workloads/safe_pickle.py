"""Unpickling data files without running their code.

A pickle is a small program: each global it names is imported and may be called with
arguments the file chooses, so ``pickle.load`` on a file someone sent you runs whatever
they wrote (``os.system``, ``builtins.eval``...). servesim reads one pickle format,
Apparate's per-ramp artefacts (plain containers of numbers, booleans and numpy arrays),
and ``servesim check`` is what people run to vet a file they were sent, so that format is
read by :class:`RestrictedUnpickler`: its ``find_class`` hands out only the globals the
schema needs and refuses every other before anything is imported or called.

What is allowed, and why each is harmless with arguments an attacker chooses:

* builtin containers and scalars (``dict``, ``list``, ``tuple``, ``set``, ``frozenset``,
  ``int``, ``float``, ``complex``, ``bool``, ``str``, ``bytes``, ``bytearray``) and
  ``collections.OrderedDict`` / ``defaultdict`` (whose factory is itself one of these):
  constructors of plain data;
* ``_codecs.encode``: how protocols 0-2 spell a ``bytes`` object (a numpy array's raw
  data among them); it converts text to bytes;
* numpy's array, dtype and scalar reconstruction (``ndarray``, ``dtype``,
  ``multiarray._reconstruct``, ``multiarray.scalar``, ``numeric._frombuffer``), under
  both module names numpy has used (``numpy.core`` before 2.0, ``numpy._core`` after).
  ``_reconstruct`` makes only the subtype it is given, and the only subtype this
  unpickler can give it is ``ndarray``. The elements of an object array are unpickled
  by this same unpickler, so a payload hidden in one is refused too.

Everything else, torch tensors included, is refused with :class:`RefusedGlobal`.
"""

from __future__ import annotations

import codecs
import collections
import pickle

import numpy as np

try:  # numpy >= 2.0 moved its core to numpy._core; pickles name either
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # pragma: no cover  (numpy < 2.0)
    from numpy.core import multiarray as _multiarray, numeric as _numeric


def _numpy_globals() -> dict[tuple[str, str], object]:
    found = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        found[(f"{core}.multiarray", "_reconstruct")] = _multiarray._reconstruct
        found[(f"{core}.multiarray", "scalar")] = _multiarray.scalar
        found[(f"{core}.numeric", "_frombuffer")] = _numeric._frombuffer
    return found


ALLOWED: dict[tuple[str, str], object] = {
    **{(module, t.__name__): t  # protocols 0-2 write Python 2's name for builtins
       for module in ("builtins", "__builtin__")
       for t in (dict, list, tuple, set, frozenset, int, float, complex, bool, str, bytes, bytearray)},
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("_codecs", "encode"): codecs.encode,
    **_numpy_globals(),
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside :data:`ALLOWED`; nothing it names was imported."""

    def __init__(self, module: str, name: str):
        super().__init__(f"it tries to load the global {module}.{name}, which a data file may not "
                         f"(allowed: plain containers, numbers, strings and numpy arrays)")
        self.module, self.name = module, name


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose globals come from :data:`ALLOWED` only (the table is looked
    up, never imported from, so a refused name's module is never even loaded)."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it holds a persistent reference, which a data file may not")
