"""Training-step time and throughput of each model config on this machine.

One step = forward, backward and a fused Adam update on a batch of random crops in
channels_last fp32, the way `bgcodec.train.loop` runs on CPU. Prints a Markdown table.

    python benchmarks/train_speed.py --configs tiny small --batch 16 --crop 128
    python benchmarks/train_speed.py --configs small --compile   # torch.compile'd step (warm-up compiles)
"""

import argparse
import statistics
import time

import torch

from bgcodec.config import CONFIGS
from bgcodec.model import BGVAE, count_parameters
from bgcodec.train.loop import rate_distortion, sample_lambdas


def step_times(config: str, batch: int, crop: int, steps: int, warmup: int, compile: bool = False) -> list[float]:
    torch.manual_seed(0)
    model = BGVAE(CONFIGS[config]).to(memory_format=torch.channels_last).train()
    forward = torch.compile(model) if compile else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    lo, hi = model.cfg.lmbda_range
    im = torch.rand(batch, 3, crop, crop).contiguous(memory_format=torch.channels_last)
    lmbda = sample_lambdas(batch, lo, hi, torch.Generator().manual_seed(0))
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = rate_distortion(*forward(im, lmbda), im, lmbda)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "small"], choices=sorted(CONFIGS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (compiled in the warm-up)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}×{args.crop}², "
          f"median of {args.steps} steps after {args.warmup} warm-up{', torch.compile' if args.compile else ''}\n")
    print("| config | params (M) | step (s) | images/s |")
    print("|---|---|---|---|")
    for name in args.configs:
        median = statistics.median(step_times(name, args.batch, args.crop, args.steps, args.warmup, args.compile))
        params = count_parameters(BGVAE(CONFIGS[name])) / 1e6
        print(f"| {name} | {params:.2f} | {median:.3f} | {args.batch / median:.1f} |")


if __name__ == "__main__":
    main()
