"""Engine validation tests. Shared helpers live in ``enginekit.py`` next to this file.

Test modules import ``enginekit`` directly; this conftest only makes sure the folder is
on ``sys.path`` whatever pytest import mode is used (there is no ``__init__.py`` here, so
the module name stays unique to this folder).
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
