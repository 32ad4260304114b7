"""Plot validation PSNR and bpp against the training step from one or more runs' val.csv.

Runs are given in order; a run started with --init continues the step count of the one
before it (its steps are offset by the previous run's last logged step, from log.csv).

    python benchmarks/training_curve.py runs/small1 runs/small2 -o docs/results/training_small.png
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path


def read_runs(run_dirs: list[Path]) -> dict[float, list[tuple[int, float, float]]]:
    """λ → [(cumulative step, bpp, psnr)] over all runs."""
    curves: dict[float, list[tuple[int, float, float]]] = defaultdict(list)
    offset = 0
    for run in run_dirs:
        with open(run / "val.csv") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            curves[float(row["lambda"])].append((offset + int(row["step"]), float(row["bpp"]), float(row["psnr"])))
        with open(run / "log.csv") as f:
            offset += max(int(row["step"]) for row in csv.DictReader(f))
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (with val.csv), in training order")
    parser.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = read_runs(args.runs)
    fig, (ax_psnr, ax_bpp) = plt.subplots(1, 2, figsize=(10, 4))
    for lmbda, points in sorted(curves.items()):
        steps, bpp, psnr = zip(*sorted(points))
        ax_psnr.plot(steps, psnr, marker="o", label=f"λ {lmbda:g}")
        ax_bpp.plot(steps, bpp, marker="o", label=f"λ {lmbda:g}")
    ax_psnr.set(xlabel="training step", ylabel="PSNR (dB)", title="validation PSNR (real .bgv files)")
    ax_bpp.set(xlabel="training step", ylabel="bpp", title="validation bpp")
    for ax in (ax_psnr, ax_bpp):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print("| step | " + " | ".join(f"λ {lmbda:g} (bpp / dB)" for lmbda in sorted(curves)) + " |")
    print("|---:|" + "---|" * len(curves))
    table: dict[int, dict[float, str]] = defaultdict(dict)
    for lmbda in sorted(curves):
        for step, bpp, psnr in sorted(curves[lmbda]):
            table[step][lmbda] = f"{bpp:.3f} / {psnr:.2f}"
    for step in sorted(table):
        print(f"| {step} | " + " | ".join(table[step].get(lmbda, "—") for lmbda in sorted(curves)) + " |")


if __name__ == "__main__":
    main()
