"""Training-step time and throughput of each model config and training term on this machine.

One step = the trainer's objective (``bgcodec.train.loop.objective``: rate + λ·distortion,
plus the regulariser of ``--terms``, which fits its own model first), backward and a fused
Adam update on a batch of random crops in channels_last fp32, the way `bgcodec train` runs
on CPU. Every row is measured in the same run, alternating, and compared with the first as a
ratio. Prints a Markdown table.

    python benchmarks/train_speed.py --configs tiny small --batch 16 --crop 128
    python benchmarks/train_speed.py --configs small small-checkerboard --terms none it cca --batch 8 --crop 256
    python benchmarks/train_speed.py --configs small --compile   # torch.compile'd step (warm-up compiles)
"""

import argparse
import itertools
import statistics
import time

import torch

from bgcodec.config import CONFIGS
from bgcodec.model import BGVAE, count_parameters
from bgcodec.train.loop import build_regularisers, objective, sample_lambdas
from bgcodec.train.options import TrainOptions

TERMS = {"none": {}, "it": {"it_weight": 0.1}, "cca": {"cca_weight": 0.1}}
"""The training terms a row may add, as the TrainOptions that switch them on."""


class Stepper:
    """One config and term, built once; ``step()`` times one training step."""

    def __init__(self, config: str, term: str, batch: int, crop: int, compile: bool = False) -> None:
        torch.manual_seed(0)
        self.opts = TrainOptions(data=[], out="", config=config, **TERMS[term])
        self.model = BGVAE(CONFIGS[config]).to(memory_format=torch.channels_last).train()
        self.forward = torch.compile(self.model) if compile else self.model
        self.regularisers = build_regularisers(self.opts, self.model, torch.device("cpu"))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4, fused=True)
        lo, hi = self.model.cfg.lmbda_range
        self.im = torch.rand(batch, 3, crop, crop).contiguous(memory_format=torch.channels_last)
        self.lmbda = sample_lambdas(batch, lo, hi, torch.Generator().manual_seed(0))

    def step(self) -> float:
        start = time.perf_counter()
        loss = objective(self.forward, None, self.im, self.lmbda, self.opts, self.regularisers.values())["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "small"], choices=sorted(CONFIGS))
    parser.add_argument("--terms", nargs="+", default=["none"], choices=sorted(TERMS),
                        help="training terms per config (it, cca: the regulariser at weight 0.1)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (compiled in the warm-up)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = list(itertools.product(args.configs, args.terms))
    steppers = [Stepper(config, term, args.batch, args.crop, args.compile) for config, term in rows]
    times: list[list[float]] = [[] for _ in rows]
    for i in range(args.warmup + args.steps):
        for stepper, row_times in zip(steppers, times):
            seconds = stepper.step()
            if i >= args.warmup:
                row_times.append(seconds)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}×{args.crop}², "
          f"median of {args.steps} steps after {args.warmup} warm-up, rows alternating"
          f"{', torch.compile' if args.compile else ''}\n")
    print("| config | term | params (M) | step (s) | images/s | × first row |")
    print("|---|---|---|---|---|---|")
    reference = statistics.median(times[0])
    for (config, term), stepper, row_times in zip(rows, steppers, times):
        median = statistics.median(row_times)
        params = count_parameters(stepper.model) / 1e6
        print(f"| {config} | {term} | {params:.2f} | {median:.3f} | {args.batch / median:.1f} | "
              f"{median / reference:.2f} |")


if __name__ == "__main__":
    main()
