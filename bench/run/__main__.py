"""`python -m bench.run`: the benchmark harness (see bench/run/__init__.py and bench/README.md)."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python bench/run): make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.run.cli import main

sys.exit(main())
