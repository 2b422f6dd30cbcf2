"""fit's step on the CPU with glibc's default malloc against the malloc fit sets up (``keep_freed_cpu_memory``).

For each image model with a hand-written reference (PixelCNN, Glow) at
1x28x28 and 3x32x32, batch 64, one row of ``benchmarks/image_scale.py`` is
measured in a fresh process twice per round: once with
``PYRO_DGM_MALLOC=system`` (glibc's defaults: freed activations go back to the
kernel and are faulted in again at the next step) and once as fit runs by
default (freed memory kept for reuse). The rounds alternate the two so that
load from elsewhere hits both alike. The table gives the median ms per step
of fit and of the hand-written loop (which alternates with fit step by step
in the same process, so it runs under the same malloc), the minor page
faults per step (fit's and the hand loop's together), and the speed-ups.

    python benchmarks/cpu_allocator.py [--rounds 3] [--steps 8] [--models pixelcnn,glow]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import image_scale  # noqa: E402

SETTINGS = {"system": {"PYRO_DGM_MALLOC": "system"}, "kept": {}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--models", default=",".join(image_scale.HAND))
    args = p.parse_args(argv)
    bad = sorted(set(args.models.split(",")) - set(image_scale.HAND))
    if bad or args.rounds < 1 or args.steps < 2:
        raise SystemExit(f"--models: some of {image_scale.HAND} (got {bad}); --rounds >= 1, --steps >= 2")
    row_args = argparse.Namespace(device="cpu", steps=args.steps, width=args.width, threads=1, langevin_steps=1,
                                  ar_rows=2, bf16=False, compile=False, full_sampling=False)
    print(f"batch {image_scale.BATCH}, width {args.width}, 1 thread, {args.rounds} interleaved rounds x "
          f"{args.steps} steps; 'system': PYRO_DGM_MALLOC=system (glibc's defaults), 'kept': fit's default")
    print(f"{'model':9s} {'shape':9s} {'fit ms system':>14s} {'fit ms kept':>12s} {'speed-up':>9s} "
          f"{'hand ms system':>15s} {'hand ms kept':>13s} {'faults/step system':>19s} {'kept':>6s} "
          f"{'fit/hand kept':>14s}")
    for name in args.models.split(","):
        for shape_name in image_scale.SHAPES:
            rows = {k: [] for k in SETTINGS}
            for _ in range(args.rounds):
                for setting, env in SETTINGS.items():
                    rows[setting].append(image_scale._in_child(name, shape_name, row_args, env))
            errors = [r["error"] for rs in rows.values() for r in rs if "error" in r]
            if errors:
                print(f"{name:9s} {shape_name:9s} failed: {errors[0]}")
                continue
            med = {k: {key: statistics.median(v for r in rs for v in r[key]) for key in ("fit_ms", "hand_ms")}
                   for k, rs in rows.items()}
            faults = {k: statistics.median(r["faults_per_step"] for r in rs) for k, rs in rows.items()}
            shape = "x".join(map(str, image_scale.SHAPES[shape_name]))
            print(f"{name:9s} {shape:9s} {med['system']['fit_ms']:14.1f} {med['kept']['fit_ms']:12.1f} "
                  f"{med['system']['fit_ms'] / med['kept']['fit_ms']:9.2f} {med['system']['hand_ms']:15.1f} "
                  f"{med['kept']['hand_ms']:13.1f} {faults['system']:19.0f} {faults['kept']:6.0f} "
                  f"{med['kept']['fit_ms'] / med['kept']['hand_ms']:14.3f}")


if __name__ == "__main__":
    main()
