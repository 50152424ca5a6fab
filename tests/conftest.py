import os
import sys

# Tests import `tests.parity` and the repo's top-level packages (configs, data, launch).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
