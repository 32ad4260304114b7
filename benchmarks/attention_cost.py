"""CPU cost of cross-attention at each top-down transition.

Times one full forward pass (eval, quantised latents) of a config on a Kodak-sized input
with cross-attention off everywhere, then switched on at one transition at a time.
Prints a Markdown table.

    python benchmarks/attention_cost.py --config small --size 512 768
"""

import argparse
import dataclasses
import statistics
import time

import torch

from bgcodec.config import CONFIGS
from bgcodec.model import BGVAE

TRANSITIONS = ("64→32", "32→16", "16→8", "8→4")


def forward_time(cfg, size: tuple[int, int], repeat: int) -> float:
    torch.manual_seed(0)
    model = BGVAE(cfg).eval()
    im = torch.rand(1, 3, *size)
    lmbda = torch.tensor([128.0])
    times = []
    with torch.no_grad():
        for i in range(repeat + 1):
            start = time.perf_counter()
            model(im, lmbda, noisy=False)
            if i:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small", choices=sorted(CONFIGS))
    parser.add_argument("--size", nargs=2, type=int, default=[512, 768], metavar=("H", "W"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    base = CONFIGS[args.config]
    off = dataclasses.replace(base, cross_attention=(False,) * 4)
    baseline = forward_time(off, tuple(args.size), args.repeat)
    print(f"config {args.config}, input {args.size[0]}×{args.size[1]}, {torch.get_num_threads()} threads, "
          f"median of {args.repeat}; shipped setting: {base.cross_attention}\n")
    print("| cross-attention at | forward (s) | extra (s) |")
    print("|---|---|---|")
    print(f"| none | {baseline:.3f} | – |")
    for i, name in enumerate(TRANSITIONS):
        flags = tuple(j == i for j in range(4))
        t = forward_time(dataclasses.replace(base, cross_attention=flags), tuple(args.size), args.repeat)
        print(f"| {name} | {t:.3f} | {t - baseline:+.3f} |")


if __name__ == "__main__":
    main()
