"""Throughput of whole ``bgcodec encode`` / ``bgcodec decode`` batches with -j 1 and -j N.

Codes every image of a folder in one command per job count (``bgcodec encode DIR/*.png -o
OUT/ -j J``, then ``bgcodec decode OUT/*.bgv -o DEC/ -j J``), whole processes included,
``--repeat`` times alternating, and prints images per second and the ratio to -j 1 (of the
medians, and of each repeat, which shows the machine's noise). The files written with each
job count are checked to be the same bytes.

    python benchmarks/batch_throughput.py KODAK
    python benchmarks/batch_throughput.py KODAK --jobs 1,2 --repeat 2 --lambda 0.01
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from processes import checkout_env, wall_seconds

ENV = checkout_env()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--jobs", default="1,2", help="job counts, comma-separated (the first is the reference)")
    parser.add_argument("--lambda", dest="lmbda", default="0.01", help="λ (CLI convention)")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    images = sorted(p for p in args.folder.iterdir() if p.suffix.lower() == ".png")
    counts = [int(j) for j in args.jobs.split(",")]
    bgcodec = [sys.executable, "-m", "bgcodec"]
    seconds: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        written: dict[int, list[bytes]] = {}
        for _ in range(args.repeat):
            for jobs in counts:
                coded, decoded = Path(tmp) / f"bgv{jobs}", Path(tmp) / f"png{jobs}"
                encode = [*bgcodec, "encode", *map(str, images), "-l", args.lmbda, "-o", f"{coded}/", "-f",
                          "-j", str(jobs), "--quiet"]
                seconds.setdefault(("encode", jobs), []).append(wall_seconds(encode, ENV))
                files = sorted(coded.glob("*.bgv"))
                decode = [*bgcodec, "decode", *map(str, files), "-o", f"{decoded}/", "-f", "-j", str(jobs), "--quiet"]
                seconds.setdefault(("decode", jobs), []).append(wall_seconds(decode, ENV))
                written[jobs] = [f.read_bytes() for f in files]
        same = all(written[jobs] == written[counts[0]] for jobs in counts)
    load = f", load average {os.getloadavg()[0]:.2f} at the end" if hasattr(os, "getloadavg") else ""
    print(f"{len(images)} images of {args.folder}, λ {args.lmbda}, median of {args.repeat}, {os.cpu_count()} "
          f"cores{load}; the same files with every -j: {same}\n")
    print(f"| command | -j | s | images/s | × -j {counts[0]} | × -j {counts[0]} per repeat |")
    print("|---|---:|---:|---:|---:|---|")
    for verb in ("encode", "decode"):
        reference = seconds[(verb, counts[0])]
        for jobs in counts:
            value = statistics.median(seconds[(verb, jobs)])
            ratios = ", ".join(f"{r / t:.2f}" for r, t in zip(reference, seconds[(verb, jobs)]))
            print(f"| bgcodec {verb} | {jobs} | {value:.2f} | {len(images) / value:.2f} | "
                  f"{statistics.median(reference) / value:.2f} | {ratios} |")


if __name__ == "__main__":
    main()
