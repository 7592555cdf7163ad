"""Run every bench/bench_*.py in turn (each prints its own table of medians and ratios)."""

import runpy
import sys
from pathlib import Path

here = Path(__file__).parent
sys.path.insert(0, str(here))  # the scripts share bench/timing.py
only = set(sys.argv[1:])
for script in sorted(here.glob("bench_*.py")):
    if only and script.stem.removeprefix("bench_") not in only:
        continue
    print(f"\n=== {script.name} ===", flush=True)
    runpy.run_path(str(script), run_name="__main__")
