"""Integer programs solved exactly with SciPy's HiGHS (``scipy.optimize.milp``).

InfAdapter's and IPA's programs (:mod:`policies.infadapter`, :mod:`policies.ipa`) are
small, and their tests compare each optimum with brute-force enumeration to 1e-6, so
both are solved to a zero gap rather than HiGHS's default 1e-4.
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

_EXACT = {"mip_rel_gap": 0.0, "mip_abs_gap": 0.0}


def exact_milp(c: np.ndarray, constraints: Sequence[LinearConstraint], integrality: np.ndarray,
               bounds: Bounds) -> Optional[np.ndarray]:
    """Minimise ``c·x`` with HiGHS to a zero optimality gap. Returns ``x``, or ``None``
    if the program is infeasible.

    ``mip_abs_gap`` is not among the options scipy knows, so scipy passes it to HiGHS
    verbatim with a RuntimeWarning, which is silenced here. Any other failure (there is
    no time limit, so this means a numerical breakdown) raises RuntimeError rather than
    returning a configuration nobody verified.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unrecognized options", category=RuntimeWarning)
        result = milp(c, constraints=constraints, integrality=integrality, bounds=bounds,
                      options=dict(_EXACT))
    if result.status == 2:
        return None
    if result.status != 0:
        raise RuntimeError(f"HiGHS did not solve the program (status {result.status}): {result.message}")
    return result.x
