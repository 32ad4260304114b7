"""What a bgcodec process costs before its first pixel, against a bare ``import torch``.

Runs, alternating, ``--repeat`` times each: ``python -c "import torch"``, a whole
``bgcodec decode`` and a whole ``bgcodec encode`` of a 64×64 image (so that the model's
work is negligible), and a child that times the stages of start-up one by one. Prints
the median wall time of each, and the overhead of each command beyond importing torch.

    python benchmarks/startup.py                     # shipped weights
    python benchmarks/startup.py --weights random:paper --repeat 5
    python benchmarks/startup.py --repo ../old-checkout     # another version, for a before/after
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from processes import REPO, checkout_env, wall_seconds

ENV = dict(os.environ)

STAGES = """
import json, sys, time
t = [time.perf_counter()]
import torch
t.append(time.perf_counter())
from bgcodec.cli import cli
from bgcodec.codec import Codec
t.append(time.perf_counter())
codec = Codec.load(sys.argv[1] or None, "cpu")
t.append(time.perf_counter())
names = ["import torch", "import bgcodec", "Codec.load (build the model, load the weights)"]
print(json.dumps({name: b - a for name, a, b in zip(names, t, t[1:])}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="weights (default: the shipped file)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--repo", type=Path, default=REPO, help="the bgcodec checkout to measure (default: this one)")
    args = parser.parse_args()
    ENV.update(checkout_env(args.repo))
    import numpy as np
    from PIL import Image

    weights = ["--weights", args.weights] if args.weights else []
    with tempfile.TemporaryDirectory() as tmp:
        png, bgv, out = (Path(tmp) / name for name in ("in.png", "in.bgv", "out.png"))
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(png)
        bgcodec = [sys.executable, "-m", "bgcodec"]
        commands = {
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "bgcodec encode (64x64)": [*bgcodec, "encode", str(png), "-l", "0.01", "-o", str(bgv), "-f", *weights],
            "bgcodec decode (64x64)": [*bgcodec, "decode", str(bgv), "-o", str(out), "-f", *weights],
        }
        subprocess.run(commands["bgcodec encode (64x64)"], check=True, env=ENV)  # the file, and warm caches
        times: dict[str, list[float]] = {name: [] for name in commands}
        stages: list[dict[str, float]] = []
        for _ in range(args.repeat):
            for name, command in commands.items():
                times[name].append(wall_seconds(command, ENV))
            child = subprocess.run([sys.executable, "-c", STAGES, args.weights or ""], check=True, env=ENV,
                                   capture_output=True, text=True)
            stages.append(json.loads(child.stdout))
    base = statistics.median(times["python -c 'import torch'"])
    print(f"{args.repo}, weights {args.weights or 'shipped'}, median of {args.repeat} runs\n")
    print("| process | wall s | beyond import torch s |")
    print("|---|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.3f} | {statistics.median(values) - base:+.3f} |")
    print("\n| start-up stage (one process) | s |")
    print("|---|---:|")
    for stage in stages[0]:
        print(f"| {stage} | {statistics.median(s[stage] for s in stages):.3f} |")


if __name__ == "__main__":
    main()
