"""Plot validation PSNR and bpp against the training step from one or more runs' val.csv.

Runs are given in order; a run started with --init continues the step count of the one
before it (its steps are offset by the previous run's last logged step, from log.csv).
Run directories do not outlive a session, so the curve so far is kept in the repository
as a history CSV (step, lambda, bpp, psnr; cumulative steps): --history reads it, the
runs continue from its last step, and --write-history saves the merged curve.

    python benchmarks/training_curve.py runs/small1 runs/small2 -o docs/results/training_small.png
    python benchmarks/training_curve.py --history docs/results/training_small.csv runs/next \\
        --write-history docs/results/training_small.csv -o docs/results/training_small.png
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

Curves = dict[float, list[tuple[int, float, float]]]
"""λ → [(cumulative step, bpp, psnr)]."""


def read_history(path: Path) -> Curves:
    curves: Curves = defaultdict(list)
    with open(path) as f:
        for row in csv.DictReader(f):
            curves[float(row["lambda"])].append((int(row["step"]), float(row["bpp"]), float(row["psnr"])))
    return curves


def add_runs(curves: Curves, run_dirs: list[Path]) -> Curves:
    """The runs' validation points appended to ``curves``, their steps continuing its last one."""
    offset = max((step for points in curves.values() for step, _, _ in points), default=0)
    for run in run_dirs:
        with open(run / "val.csv") as f:
            for row in csv.DictReader(f):
                point = (offset + int(row["step"]), float(row["bpp"]), float(row["psnr"]))
                curves[float(row["lambda"])].append(point)
        with open(run / "log.csv") as f:
            offset += max(int(row["step"]) for row in csv.DictReader(f))
    return curves


def write_history(curves: Curves, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["step", "lambda", "bpp", "psnr"])
        for step, lmbda, bpp, psnr in sorted((s, lm, b, p) for lm, points in curves.items() for s, b, p in points):
            writer.writerow([step, f"{lmbda:g}", f"{bpp:.3f}", f"{psnr:.2f}"])


def plot(curves: Curves, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.savefig(path, dpi=100)


def print_table(curves: Curves) -> None:
    print("| step | " + " | ".join(f"λ {lmbda:g} (bpp / dB)" for lmbda in sorted(curves)) + " |")
    print("|---:|" + "---|" * len(curves))
    table: dict[int, dict[float, str]] = defaultdict(dict)
    for lmbda in sorted(curves):
        for step, bpp, psnr in sorted(curves[lmbda]):
            table[step][lmbda] = f"{bpp:.3f} / {psnr:.2f}"
    for step in sorted(table):
        print(f"| {step} | " + " | ".join(table[step].get(lmbda, "—") for lmbda in sorted(curves)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run directories (with val.csv), in training order")
    parser.add_argument("--history", type=Path, help="CSV of the curve so far (the runs continue from its last step)")
    parser.add_argument("--write-history", type=Path, help="save the merged curve as a history CSV")
    parser.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    if not args.runs and not args.history:
        parser.error("give run directories, --history, or both")
    curves = add_runs(read_history(args.history) if args.history else defaultdict(list), args.runs)
    plot(curves, args.out)
    if args.write_history:
        write_history(curves, args.write_history)
    print_table(curves)


if __name__ == "__main__":
    main()
