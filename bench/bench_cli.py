"""`gpumesh --help` wall time, median of 5, against a bare `python -c pass` start in the same run.

Usage: python bench/bench_cli.py [runs]
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def median_wall(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    exe = Path(sys.executable).with_name("gpumesh")
    gpumesh = str(exe) if exe.exists() else shutil.which("gpumesh")
    if gpumesh is None:
        sys.exit("gpumesh is not installed in this environment")
    base = median_wall([sys.executable, "-c", "pass"], runs)
    helpt = median_wall([gpumesh, "--help"], runs)
    print(f"python -c pass   median of {runs}: {base * 1000:7.1f} ms")
    print(f"gpumesh --help   median of {runs}: {helpt * 1000:7.1f} ms  ({helpt / base:.1f}x a bare interpreter start)")


if __name__ == "__main__":
    main()
