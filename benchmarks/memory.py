"""Peak memory (RSS) of bgcodec encoding and decoding a large image on the CPU.

Each operation runs in a fresh Python process, so that its peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own and not an earlier
operation's. Rows:

* ``setup``: imports, model weights and the synthetic image (made once by the parent
  process and loaded from a .npy file; what the encode row starts from);
* ``encode``: setup, then ``Codec.encode`` of the image (the .bgv bytes go to a
  temporary file for the decode row);
* ``decode``: imports and weights, the .bgv bytes, then ``Codec.decode``;
* with ``--cli``, ``bgcodec encode`` of the image as a PNG and ``bgcodec decode`` of its
  file to a PNG, whole processes (reading and writing the files included), once per
  ``--jobs`` value (with ``-j`` > 1 the tiles of a large image go to that many workers;
  the peak is then the largest single process's).

"peak before" is ru_maxrss just before the measured call, "peak" the one after it;
their difference is what the operation itself added on top of the setup's peak.
Prints a Markdown table.

    python benchmarks/memory.py                       # 3840x2160, default weights
    python benchmarks/memory.py --width 1920 --height 1080 --weights random:tiny
    python benchmarks/memory.py --width 1024 --height 1024 --effort 1   # SGA encoding
    python benchmarks/memory.py --width 8192 --height 8192 --cli        # 64 MP, tiled
    python benchmarks/memory.py --width 4096 --height 4096 --cli --jobs 1,2   # tiles in 2 workers

The codec runs in float64 with torch's thread count (bgcodec.codec); SGA (--effort) in
float32.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bgcodec.eval.system import cpu_model  # noqa: E402  (standard library only: keeps this process small)


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def synthetic_image(height: int, width: int, seed: int = 0):
    """A deterministic photo-like HxWx3 uint8 image: smooth noise, gradients, some edges."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
    image += rng.integers(-6, 7, image.shape, dtype=np.int16)  # fine texture
    image[:, :: max(1, width // 24)] = 255  # a few sharp lines
    return np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8))


def child(args: argparse.Namespace) -> None:
    if args.child == "make-image":
        import numpy as np

        from PIL import Image

        image = synthetic_image(args.height, args.width)
        np.save(args.image, image)
        Image.fromarray(image).save(args.image[:-4] + ".png", compress_level=1)
        print("{}")
        return
    from bgcodec.codec import Codec

    codec = Codec.load(args.weights, device="cpu")
    lmbda = args.lmbda if args.lmbda is not None else (codec.lambda_range[0] * codec.lambda_range[1]) ** 0.5
    result: dict = {}
    if args.child in ("setup", "encode"):
        import numpy as np

        image = np.load(args.image)
    else:
        data = Path(args.bgv).read_bytes()
    result["peak_before_mib"] = peak_rss_mib()
    start = time.perf_counter()
    if args.child == "encode":
        data = codec.encode(image, lmbda, effort=args.effort)
        Path(args.bgv).write_bytes(data)
        result["bytes"] = len(data)
    elif args.child == "decode":
        decoded = codec.decode(data)
        result["shape"] = list(decoded.shape)
    result["seconds"] = time.perf_counter() - start
    result["peak_mib"] = peak_rss_mib()
    result["lambda"] = lmbda
    from bgcodec.config import resolve

    result["weights"] = resolve(args.weights)
    print(json.dumps(result))


def run_child(op: str, args: argparse.Namespace, bgv: str, image: str) -> dict:
    command = [sys.executable, __file__, "--child", op, "--bgv", bgv, "--image", image,
               "--width", str(args.width), "--height", str(args.height)]
    for flag, value in (("--weights", args.weights), ("--lambda", args.lmbda), ("--effort", args.effort)):
        if value is not None:
            command += [flag, str(value)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{op} failed (exit {proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


CLI_PEAK = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, capture_output=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"peak_mib": peak / 2**20 if sys.platform == "darwin" else peak / 2**10,
                  "seconds": time.perf_counter() - start}))
"""


def run_cli(op: str, args: argparse.Namespace, bgv: str, image: str, lmbda: float, jobs: int) -> dict:
    """Peak RSS and wall time of a whole bgcodec process, measured by a small parent of its own."""
    png = image[:-4] + ".png"
    command = [sys.executable, "-m", "bgcodec", op, png if op == "encode" else bgv, "-f", "-j", str(jobs), "-o",
               bgv if op == "encode" else png[:-4] + "-decoded.png"]
    if op == "encode":
        command += ["-l", str(lmbda), "-e", str(args.effort)]
    if args.weights:
        command += ["--weights", args.weights]
    return json.loads(subprocess.run([sys.executable, "-c", CLI_PEAK, *command], check=True, capture_output=True,
                                     text=True, cwd=REPO).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=3840)
    parser.add_argument("--height", type=int, default=2160)
    parser.add_argument("--weights", default=None, help="weights spec (default: the shipped default)")
    parser.add_argument("--lambda", dest="lmbda", type=float, default=None,
                        help="λ (CLI convention; default: geometric middle of the weights' range)")
    parser.add_argument("--effort", type=int, default=0, help="encoder effort (SGA), 0..3")
    parser.add_argument("--cli", action="store_true", help="also whole bgcodec encode / decode processes")
    parser.add_argument("--jobs", default="1", help="-j values of the --cli rows, comma-separated")
    parser.add_argument("--child", choices=["make-image", "setup", "encode", "decode"], help=argparse.SUPPRESS)
    parser.add_argument("--bgv", help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    # This process stays small (standard library only): a child's ru_maxrss starts from the
    # RSS of the process it was forked from (Linux keeps the peak across fork and exec).
    with tempfile.TemporaryDirectory() as tmp:
        bgv, image = os.path.join(tmp, "image.bgv"), os.path.join(tmp, "image.npy")
        run_child("make-image", args, bgv, image)  # so that no measured process pays for making it
        rows = [(op, run_child(op, args, bgv, image)) for op in ("setup", "encode", "decode")]
        if args.cli:
            rows += [(f"bgcodec {op} -j {jobs}", run_cli(op, args, bgv, image, rows[1][1]["lambda"], int(jobs)))
                     for jobs in args.jobs.split(",") for op in ("encode", "decode")]
    size = f"{args.width}x{args.height}"
    pixels = args.width * args.height
    print(f"Peak RSS, {size} synthetic image, weights `{rows[1][1]['weights']}`, CPU, "
          f"λ = {rows[1][1]['lambda']:.4g}; "
          f"{cpu_model()} ({os.cpu_count()} cores), Python {platform.python_version()}")
    print()
    print("| operation | image | peak RSS (MiB) | peak before the call (MiB) | added by the call (MiB) | time (s) | notes |")
    print("|---|---|---:|---:|---:|---:|---|")
    for op, r in rows:
        note = {
            "setup": "imports + weights + image",
            "encode": f"effort {args.effort}, {r.get('bytes', 0):,} bytes, {8 * r.get('bytes', 0) / pixels:.3f} bpp",
            "decode": "from the encode row's bytes",
            "bgcodec encode": "whole process, PNG in",
            "bgcodec decode": "whole process, PNG out",
        }[op.split(" -j")[0]]
        time_cell = "" if op == "setup" else f"{r['seconds']:.1f}"
        before = r.get("peak_before_mib")
        added_cell = "" if op == "setup" or before is None else f"{r['peak_mib'] - before:,.0f}"
        before_cell = "" if before is None else f"{before:,.0f}"
        print(f"| {op} | {size} | {r['peak_mib']:,.0f} | {before_cell} | {added_cell} | "
              f"{time_cell} | {note} |")


if __name__ == "__main__":
    main()
