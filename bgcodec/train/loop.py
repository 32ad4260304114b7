"""Variable-rate training of BG-VAE: the objective, and the loop that sets a run up, takes
its steps and logs them.

One entry point for CPU, one GPU and several GPUs (``torchrun`` → DistributedDataParallel).
A run directory holds ``checkpoint.safetensors`` (model, EMA, optimizer; for --resume),
``ema.safetensors`` (the exported weights, loadable with ``--weights``), ``log.csv`` and
``val.csv``.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .. import lambdas
from ..bound import BoundVAE
from ..codec import pick_device
from ..config import CONFIGS
from ..errors import BgcodecError
from ..imageio import find_images
from ..layers import set_dc_removed
from ..model import BGVAE, HierarchicalVAE
from ..weights import load_bound_model
from .checkpoints import export_weights, init_from, load_checkpoint, save_checkpoint
from .curves import bound_curve, codec_curve
from .data import CropSampler, load_training_image
from .guidance import GuidedStudent, guidance_loss, teacher_targets
from .options import TrainOptions
from .cca import CausalContextRegulariser
from .source_model import SourceModel, SourceRegulariser

Log = Callable[[str], None]
Regulariser = SourceRegulariser | CausalContextRegulariser
"""A training term with a model of its own: ``term(out, rates, im, lmbda)`` fits that model
and returns the codec's ``penalty`` and statistics; ``model`` and ``optimizer`` go into
checkpoints."""


def sample_lambdas(n: int, lo: float, hi: float, generator: torch.Generator,
                   method: str = "cube-root") -> torch.Tensor:
    """λ over [lo, hi], one per image: uniform in λ^(1/3) ("cube-root", QARV's variable-rate
    sampling), in ln λ ("log-uniform", the bound model's), or in ln λ with three times the
    density on the middle half of the ln λ range ("log-middle": half the draws log-uniform over
    the whole range, half over its middle half)."""
    u = torch.rand(n, generator=generator)
    if method == "log-uniform":
        return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    if method == "log-middle":
        # Inverse CDF of that mixture, in t = position in ln λ: 1/8 of the mass on each outer quarter.
        t = torch.where(u < 0.125, 2 * u,
                        torch.where(u < 0.875, 0.25 + (u - 0.125) * 2 / 3, 0.75 + (u - 0.875) * 2))
        return torch.exp(math.log(lo) + t * (math.log(hi) - math.log(lo)))
    if method == "cube-root":
        return (lo ** (1 / 3) + u * (hi ** (1 / 3) - lo ** (1 / 3))) ** 3
    raise ValueError(f"unknown λ sampling {method!r}; expected one of {lambdas.SAMPLINGS}")


def rate_distortion(out: torch.Tensor, rates: list[torch.Tensor], im: torch.Tensor,
                    lmbda: torch.Tensor) -> dict[str, torch.Tensor]:
    """The variable-rate objective from a model's output and per-latent rates (nats):
    nats per sub-pixel + λ·MSE on the [-1, 1] scale, batch mean."""
    num_dims = 3 * im.shape[2] * im.shape[3]
    rate = torch.stack(rates).sum(0) / num_dims
    mse = (out.float() - (2 * im - 1)).pow(2).mean(dim=(1, 2, 3))
    return {"loss": (rate + lmbda * mse).mean(), "bpp": (rate * 3 * lambdas.BITS_PER_NAT).mean(),
            "psnr": (10 * torch.log10(4 / mse.clamp_min(1e-10))).mean()}


def learning_rate(step: int, opts: TrainOptions) -> float:
    """Linear warm-up, constant to half-way, then cosine down to 1 % (QARV's const-0.5-cos)."""
    if step < opts.warmup_steps:
        return opts.lr * (step + 1) / opts.warmup_steps
    half = opts.steps // 2
    if step < half:
        return opts.lr
    t = (step - half) / max(1, opts.steps - half)
    return opts.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


class EMA:
    """Exponential moving average of the parameters, warmed up so early steps count fully."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = self.decay * (1 - math.exp(-step / (10 / (1 - self.decay))))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - decay)


def objective(trained: torch.nn.Module, teacher: BoundVAE | None, im: torch.Tensor, lmbda: torch.Tensor,
              opts: TrainOptions, regularisers: Iterable[Regulariser] = ()) -> dict[str, torch.Tensor]:
    """The loss to minimise and the statistics to log, for every kind of run. Each of the
    ``regularisers`` fits its own model first, then adds its term."""
    if opts.shallow_only:
        # The shallow synthesis sees the quantised latents it will see when decoding.
        return rate_distortion(*trained(im, lmbda, noisy=False, synthesis="shallow"), im, lmbda)
    if teacher is None:
        out, rates = trained(im, lmbda)
        stats = rate_distortion(out, rates, im, lmbda)
    else:
        out, rates, features = trained(im, lmbda)
        stats = rate_distortion(out, rates, im, lmbda)
        feature_loss, reconstruction_loss = guidance_loss(teacher_targets(teacher, im, lmbda), out, features)
        guidance = opts.feature_weight * feature_loss + opts.reconstruction_weight * reconstruction_loss
        stats["loss"] = stats["loss"] + guidance
        stats.update(feature_loss=feature_loss.detach(), teacher_mse=reconstruction_loss.detach())
    for regulariser in regularisers:
        term = regulariser.term(out, rates, im, lmbda)
        stats["loss"] = stats["loss"] + term.pop("penalty")
        stats.update(term)
    return stats


# -- the loop ---------------------------------------------------------------------------------

@dataclass
class Run:
    """Everything a training run holds while it steps."""

    opts: TrainOptions
    out: Path
    device: torch.device
    rank: int
    world: int
    model: HierarchicalVAE
    student: torch.nn.Module
    """What the optimiser trains: the model, or the model and its guidance projectors."""
    trained: torch.nn.Module
    """``student`` as the step calls it: wrapped by DDP or torch.compile where asked."""
    teacher: BoundVAE | None
    ema: EMA
    optimizer: torch.optim.Optimizer
    trainable: list[torch.nn.Parameter]
    sampler: CropSampler
    lambda_generator: torch.Generator
    val_images: list[np.ndarray]
    regularisers: dict[str, Regulariser] = field(default_factory=dict)
    """Those of --it-weight ("source") and --cca-weight ("cca"), by checkpoint prefix."""
    step: int = 0
    started: float = 0.0
    window: list[dict] = field(default_factory=list)
    window_started: float = 0.0

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoint.safetensors"

    @property
    def wall_s(self) -> float:
        return time.time() - self.started


def train(opts: TrainOptions, log: Log = print) -> Path:
    """Run (or resume) training; returns the path of the exported EMA weights."""
    opts.check()
    run = setup(opts, log)
    stop = _StopRequested()
    last_save = time.time()
    deadline = None if opts.minutes is None else time.time() + 60 * opts.minutes
    requested_steps = opts.steps
    while run.step < opts.steps and not stop.requested:
        stats = take_step(run)
        if run.rank != 0:
            continue
        run.window.append(stats)
        if run.step % opts.log_every == 0 or run.step == opts.steps:
            steps_per_s = log_window(run, log)
            if deadline is not None:
                opts.steps = steps_that_fit(run.step, requested_steps, steps_per_s, deadline - time.time())
        if run.val_images and (run.step % opts.val_every == 0 or run.step == opts.steps):
            validate(run, log)
        if time.time() - last_save > 60 * opts.checkpoint_minutes:
            save(run)
            last_save = time.time()
    if run.rank == 0:
        save(run)
        log(f"saved step {run.step} to {run.out}" + (" (stopped by signal)" if stop.requested else ""))
    if run.world > 1:
        dist.destroy_process_group()
    return run.out / "ema.safetensors"


def setup(opts: TrainOptions, log: Log) -> Run:
    """Devices, model, teacher, optimiser, data and validation images; resumes from the
    checkpoint or starts from --init."""
    device = pick_device(opts.device)
    rank, world = _setup_distributed(device.type)
    if world > 1 and opts.minutes is not None:  # the ranks would have to agree on the steps that fit
        raise BgcodecError("--minutes works in a single process, not under torchrun")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    elif opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed + rank)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    resuming = opts.resume and (out / "checkpoint.safetensors").exists()

    model = (BoundVAE if opts.bound else BGVAE)(CONFIGS[opts.config])
    if opts.init and not resuming:
        grown, missing = init_from(model, opts.init)
        log(f"init from {opts.init}: {len(grown)} tensors grown, {len(missing)} not matched"
            + (f": {', '.join(missing)}" if missing else ""))
    model = model.to(device, memory_format=torch.channels_last)
    # Frozen parameters get no gradient, so DDP and the optimiser ignore them.
    model.requires_grad_(not opts.shallow_only)
    if isinstance(model, BGVAE):
        model.shallow_synthesis.requires_grad_(opts.shallow_only)
    teacher = _load_teacher(opts, model, device) if opts.teacher else None
    student = GuidedStudent(model).to(device, memory_format=torch.channels_last) if teacher else model
    trainable = [p for p in student.parameters() if p.requires_grad]
    ema = EMA(model, opts.ema_decay)
    optimizer = torch.optim.Adam(trainable, lr=opts.lr, fused=True)
    regularisers = build_regularisers(opts, model, device)
    step, wall_before = 0, 0.0
    if resuming:
        step, wall_before = load_checkpoint(out / "checkpoint.safetensors", student, ema.model, optimizer,
                                            regularisers)
        log(f"resumed from {out / 'checkpoint.safetensors'} at step {step}")
    trained = torch.nn.parallel.DistributedDataParallel(student) if world > 1 else student
    if opts.compile:
        log("compiling the training step (torch.compile): the first step takes minutes")
        trained = torch.compile(trained)

    sampler = CropSampler(opts.data, opts.crop, opts.downscale_jpeg, seed=opts.seed + step, rank=rank,
                          synthetic_share=opts.synthetic_share)
    val_images = []
    if rank == 0 and opts.val_dir:
        val_images = [load_training_image(p, False) for p in find_images([opts.val_dir], opts.val_images)]
    run = Run(opts, out, device, rank, world, model, student, trained, teacher, ema, optimizer, trainable, sampler,
              torch.Generator().manual_seed(opts.seed * 1000 + rank + step), val_images, regularisers, step,
              started=time.time() - wall_before, window_started=time.time())
    what = ("the bound model " if opts.bound else "the shallow synthesis of " if opts.shallow_only
            else "the guided codec " if teacher else "")
    log(f"training {what}{opts.config} ({sum(p.numel() for p in trainable) / 1e6:.3f} M trainable params) on "
        f"{len(sampler.images)} images, {world}× {device.type}, batch {opts.batch_size}×{opts.crop}², "
        f"steps {step}→{opts.steps}")
    return run


def take_step(run: Run) -> dict[str, float]:
    """One optimiser step on a fresh batch; returns its statistics."""
    opts = run.opts
    lr = learning_rate(run.step, opts)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    if opts.dc_free_ramp:  # zero-sum filters start with their mean fully out
        set_dc_removed(run.trained, min(1.0, run.step / opts.dc_free_ramp))
    im = run.sampler.batch(opts.batch_size).to(run.device).contiguous(memory_format=torch.channels_last)
    lo, hi = run.model.cfg.lmbda_range
    lmbda = sample_lambdas(opts.batch_size, lo, hi, run.lambda_generator, opts.sampled_lambdas).to(run.device)
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=opts.bf16):
        stats = objective(run.trained, run.teacher, im, lmbda, opts, run.regularisers.values())
    run.optimizer.zero_grad(set_to_none=True)
    stats["loss"].backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(run.trainable, opts.grad_clip)
    if torch.isfinite(grad_norm):
        run.optimizer.step()
        run.ema.update(run.model, run.step)
    run.step += 1
    return {k: v.item() for k, v in stats.items()}


def log_window(run: Run, log: Log) -> float:
    """The mean statistics of the steps since the last log line, to log.csv and ``log``;
    returns their rate in steps per second."""
    elapsed = time.time() - run.window_started
    window = run.window
    row = {"step": run.step, "images_per_s": round(len(window) * run.opts.batch_size * run.world / elapsed, 2),
           **{k: round(float(np.mean([w[k] for w in window])), 4) for k in window[0]},
           "lr": learning_rate(run.step - 1, run.opts), "time": round(run.wall_s, 1)}
    _append_csv(run.out / "log.csv", row)
    log(" ".join(f"{k}={v}" for k, v in row.items()))
    run.window, run.window_started = [], time.time()
    return len(window) / elapsed


def steps_that_fit(step: int, requested: int, steps_per_s: float, seconds_left: float) -> int:
    """The total steps of a run at ``step`` that ends within ``seconds_left`` at this rate
    (never more than ``requested``; ``step`` when the time is up)."""
    return max(step, min(requested, step + int(steps_per_s * max(0.0, seconds_left))))


def validate(run: Run, log: Log) -> None:
    """Mean bpp and PSNR of the EMA model per validation λ, to val.csv and ``log``: real
    bitstreams for the codec, the KL estimate for the bound model."""
    opts = run.opts
    if isinstance(run.ema.model, BoundVAE):
        rows = bound_curve(run.ema.model, run.val_images, opts.val_lambdas)
    else:
        rows = codec_curve(run.ema.model, run.val_images, opts.val_lambdas, "shallow" if opts.shallow_only else "full")
    for row in rows:
        _append_csv(run.out / "val.csv", {"step": run.step, **row})
        log(f"val step={run.step} lambda={row['lambda']} bpp={row['bpp']:.4f} psnr={row['psnr']:.3f}")


def save(run: Run) -> None:
    """The checkpoint and the exported EMA weights."""
    save_checkpoint(run.checkpoint, run.student, run.ema.model, run.optimizer, run.step, run.opts, run.wall_s,
                    run.regularisers)
    export_weights(run.out / "ema.safetensors", run.ema.model, run.step, run.opts, run.wall_s)


class _StopRequested:
    def __init__(self):
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _setup_distributed(device_kind: str) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return dist.get_rank(), world


def build_regularisers(opts: TrainOptions, model: BGVAE, device: torch.device) -> dict[str, Regulariser]:
    """The training terms with models of their own that the options ask for (after the EMA
    copy: the CCA hooks belong to the trained model only)."""
    regularisers: dict[str, Regulariser] = {}
    if opts.it_weight:
        source_model = SourceModel(model.cfg.lmbda_range).to(device, memory_format=torch.channels_last)
        regularisers["source"] = SourceRegulariser(source_model, opts.it_weight, opts.it_lr)
    if opts.cca_weight:
        regularisers["cca"] = CausalContextRegulariser(model, opts.cca_weight, opts.cca_lr)
        regularisers["cca"].model.to(device, memory_format=torch.channels_last)
    return regularisers


def _load_teacher(opts: TrainOptions, model: HierarchicalVAE, device: torch.device) -> BoundVAE:
    teacher = load_bound_model(opts.teacher)
    if teacher.cfg != model.cfg:
        raise BgcodecError(f"{opts.teacher}: the teacher's config differs from the student's ({opts.config}); "
                           "train it with the same --config")
    return teacher.to(device, memory_format=torch.channels_last).requires_grad_(False)
