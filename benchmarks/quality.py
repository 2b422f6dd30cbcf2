"""Test NLL and sample quality of every model family, side by side.

    python benchmarks/quality.py                 # every family, quick settings
    python benchmarks/quality.py --family vae    # one family
    python benchmarks/quality.py --data mnist --data-dir ~/data/mnist

Each family keeps its settings and its table in ``benchmarks/quality_<family>.py``
(a function ``run(args) -> None`` that prints its table), so a family's numbers
can be reproduced with one command.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def families():
    return sorted(m.name[len("quality_"):] for m in pkgutil.iter_modules([str(HERE)])
                  if m.name.startswith("quality_"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", action="append", choices=families(), help="repeatable; default: all")
    p.add_argument("--data", default="digits", help="digits (default) or mnist / fashion-mnist with --data-dir")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every family's epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/benchmarks", help="where figures go")
    args = p.parse_args(argv)
    for fam in args.family or families():
        t0 = time.perf_counter()
        print(f"\n=== {fam} ===", flush=True)
        importlib.import_module(f"quality_{fam}").run(args)
        print(f"({fam}: {time.perf_counter() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
