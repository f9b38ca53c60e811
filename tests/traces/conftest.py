import numpy as np
import pytest


@pytest.fixture
def rng():
    """A fixed seed per test: failures reproduce, and tolerances below are set at ~4 sd."""
    return np.random.default_rng(20240607)
