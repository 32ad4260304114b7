"""Variable-rate training of BG-VAE (scaled to small budgets).

One entry point for CPU, one GPU and several GPUs (``torchrun`` → DistributedDataParallel).
A run directory holds ``checkpoint.safetensors`` (model, EMA, optimizer; for --resume),
``ema.safetensors`` (the exported weights, loadable with ``--weights``), ``log.csv`` and
``val.csv``.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file

from . import lambdas, system
from .bound import BoundVAE
from .curves import bound_curve, codec_curve
from .data import CropSampler, find_images, load_training_image
from .errors import BgcodecError, WeightsError
from .guidance import GuidedStudent, guidance_loss, teacher_targets
from .model import BGVAE, CONFIGS, HierarchicalVAE
from .weights import dense_cpu, load_bound_model, read_config, read_weights, save_model, state_differences
from .widening import grow_tensor


@dataclass
class TrainOptions:
    data: list[str]
    out: str
    config: str = "small"
    steps: int = 100_000
    batch_size: int = 16
    crop: int = 128
    lr: float = 2e-4
    warmup_steps: int = 500
    grad_clip: float = 2.0
    ema_decay: float = 0.999
    seed: int = 0
    downscale_jpeg: bool = False
    device: str = "auto"
    threads: int | None = None
    bf16: bool = False
    compile: bool = False
    """torch.compile the training step; the first step compiles for minutes (gains measured in
    docs/BENCHMARKS.md, training throughput)."""
    resume: bool = False
    init: str | None = None
    shallow_only: bool = False
    """Train only the shallow synthesis, on the quantised latents of the frozen model."""
    bound: bool = False
    """Train the bound model (teacher) instead of the codec: Gaussian latents, KL rate, log-uniform λ."""
    lambda_sampling: str = "cube-root"
    """How λ is drawn per image: "cube-root" (uniform in λ^(1/3), QARV's; favours high rates),
    "log-uniform" (equal weight per octave of λ, so the low rates get more of the steps) or
    "log-middle" (log-uniform with 3/4 of the draws in the middle half of the octaves)."""
    teacher: str | None = None
    """A bound model's weights: guide the codec by it (bgcodec.guidance)."""
    feature_weight: float = 1.0
    reconstruction_weight: float = 1.0
    log_every: int = 50
    checkpoint_minutes: float = 5.0
    val_dir: str | None = None
    val_images: int = 3
    val_every: int = 2000
    val_lambdas: list[float] = field(default_factory=lambda: list(lambdas.VALIDATION_LAMBDAS))

    @property
    def sampled_lambdas(self) -> str:
        """The λ sampling in effect: the bound model always samples log-uniform (§3.1)."""
        return "log-uniform" if self.bound else self.lambda_sampling


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


def init_from(model: HierarchicalVAE, path: str) -> tuple[list[str], list[str]]:
    """Copy every tensor whose name matches: as it is where the shape matches too, grown
    (bgcodec.widening) where the file's config is narrower. Returns the names of the grown
    tensors and of those not copied."""
    source, metadata = read_weights(path)
    target = model.state_dict()
    missing, mismatched, unused = state_differences(target, source)
    try:
        old_cfg = read_config(path, metadata)
    except WeightsError:
        old_cfg = None
    grown, not_grown = {}, []
    if old_cfg is None:  # without the file's config nothing can be grown
        not_grown = list(mismatched)
    else:
        for name in mismatched:
            try:
                grown[name] = grow_tensor(name, source[name], target[name], old_cfg, model.cfg)
            except ValueError:
                not_grown.append(name)
    skipped = set(mismatched) | set(unused)
    model.load_state_dict({**{k: v for k, v in source.items() if k not in skipped}, **grown}, strict=False)
    return sorted(grown), sorted(missing + not_grown) + [f"{k} (unused)" for k in unused]


# -- checkpoints (safetensors: tensors, with the rest as JSON metadata) -------------------

def save_checkpoint(path: Path, model: torch.nn.Module, ema: EMA, optimizer: torch.optim.Optimizer, step: int,
                    opts: TrainOptions, wall_s: float) -> None:
    """``model`` is what is trained: the model, or a GuidedStudent (model and projectors)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.model.state_dict().items()})
    opt_state = optimizer.state_dict()
    for index, state in opt_state["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    meta = {"step": str(step), "wall_seconds": str(round(wall_s, 1)), "options": json.dumps(dataclasses.asdict(opts)),
            "param_groups": json.dumps(opt_state["param_groups"])}
    tmp = path.with_suffix(".tmp")
    save_file({k: dense_cpu(v) for k, v in tensors.items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: torch.nn.Module, ema: EMA, optimizer: torch.optim.Optimizer) -> tuple[int, float]:
    """Restore a checkpoint; returns the step and the wall time spent so far."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.model.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, index, key = k.split(".", 2)
            state.setdefault(int(index), {})[key] = v
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return int(meta["step"]), float(meta.get("wall_seconds", 0))


def export_weights(path: Path, model: HierarchicalVAE, step: int, opts: TrainOptions, wall_s: float) -> None:
    """Write inference weights with config, λ range and training provenance in the metadata."""
    provenance = {
        "steps": step, "batch_size": opts.batch_size, "crop": opts.crop, "lr": opts.lr,
        "data": [str(d) for d in opts.data], "downscale_jpeg": opts.downscale_jpeg,
        "seed": opts.seed, "lambda_sampling": opts.sampled_lambdas,
        "init": opts.init, "teacher": opts.teacher,
        "guidance_weights": [opts.feature_weight, opts.reconstruction_weight] if opts.teacher else None,
        "wall_seconds": round(wall_s),
        "hardware": hardware_description(), "torch": torch.__version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    tmp = path.with_suffix(".tmp")
    save_model(model, tmp, {"config_name": opts.config, "training": json.dumps(provenance)})
    os.replace(tmp, path)


def hardware_description() -> str:
    """What trained: the GPUs, or the CPU threads (for the weights' provenance)."""
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return f"{torch.get_num_threads()} threads of {system.cpu_model()}"


# -- the loop ---------------------------------------------------------------------------------

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


def train(opts: TrainOptions, log=print) -> Path:
    """Run (or resume) training; returns the path of the exported EMA weights."""
    check_options(opts)
    device_kind = "cuda" if opts.device == "cuda" or (opts.device == "auto" and torch.cuda.is_available()) else "cpu"
    rank, world = _setup_distributed(device_kind)
    if device_kind == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    else:
        device = torch.device("cpu")
        if opts.threads:
            torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed + rank)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.safetensors"

    model = (BoundVAE if opts.bound else BGVAE)(CONFIGS[opts.config])
    if opts.init and not (opts.resume and checkpoint.exists()):
        grown, missing = init_from(model, opts.init)
        log(f"init from {opts.init}: {len(grown)} tensors grown, {len(missing)} not matched"
            + (f": {', '.join(missing)}" if missing else ""))
    model = model.to(device, memory_format=torch.channels_last)
    # Frozen parameters get no gradient, so DDP and the optimiser ignore them.
    model.requires_grad_(not opts.shallow_only)
    if isinstance(model, BGVAE):
        model.shallow_synthesis.requires_grad_(opts.shallow_only)
    teacher = _load_teacher(opts, model, device) if opts.teacher else None
    # What the optimiser trains: the model, or the model and its guidance projectors.
    student = GuidedStudent(model).to(device, memory_format=torch.channels_last) if teacher else model
    trainable = [p for p in student.parameters() if p.requires_grad]
    ema = EMA(model, opts.ema_decay)
    optimizer = torch.optim.Adam(trainable, lr=opts.lr, fused=True)
    step, wall_before = 0, 0.0
    if opts.resume and checkpoint.exists():
        step, wall_before = load_checkpoint(checkpoint, student, ema, optimizer)
        log(f"resumed from {checkpoint} at step {step}")
    trained = torch.nn.parallel.DistributedDataParallel(student) if world > 1 else student
    if opts.compile:
        log("compiling the training step (torch.compile): the first step takes minutes")
        trained = torch.compile(trained)

    sampler = CropSampler(opts.data, opts.crop, opts.downscale_jpeg, seed=opts.seed + step, rank=rank)
    lmbda_gen = torch.Generator().manual_seed(opts.seed * 1000 + rank + step)
    val_images = []
    if rank == 0 and opts.val_dir:
        val_images = [load_training_image(p, False) for p in find_images([opts.val_dir])[:opts.val_images]]
    lo, hi = model.cfg.lmbda_range
    what = ("the bound model " if opts.bound else "the shallow synthesis of " if opts.shallow_only
            else "the guided codec " if teacher else "")
    log(f"training {what}{opts.config} ({sum(p.numel() for p in trainable) / 1e6:.3f} M trainable params) on "
        f"{len(sampler.images)} images, {world}× {device_kind}, batch {opts.batch_size}×{opts.crop}², "
        f"steps {step}→{opts.steps}")

    stop = _StopRequested()
    start, last_save = time.time() - wall_before, time.time()
    window: list[dict] = []
    window_start = time.time()
    while step < opts.steps and not stop.requested:
        lr = learning_rate(step, opts)
        for group in optimizer.param_groups:
            group["lr"] = lr
        im = sampler.batch(opts.batch_size).to(device).contiguous(memory_format=torch.channels_last)
        lmbda = sample_lambdas(opts.batch_size, lo, hi, lmbda_gen, opts.sampled_lambdas).to(device)
        with torch.autocast(device_kind, dtype=torch.bfloat16, enabled=opts.bf16):
            stats = _objective(trained, teacher, im, lmbda, opts)
        optimizer.zero_grad(set_to_none=True)
        stats["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, opts.grad_clip)
        if torch.isfinite(grad_norm):
            optimizer.step()
            ema.update(model, step)
        step += 1
        window.append({k: v.item() for k, v in stats.items()})
        if rank != 0:
            continue
        if step % opts.log_every == 0 or step == opts.steps:
            elapsed = time.time() - window_start
            row = {"step": step, "images_per_s": round(len(window) * opts.batch_size * world / elapsed, 2),
                   **{k: round(float(np.mean([w[k] for w in window])), 4) for k in window[0]}, "lr": lr,
                   "time": round(time.time() - start, 1)}
            _append_csv(out / "log.csv", row)
            log(" ".join(f"{k}={v}" for k, v in row.items()))
            window, window_start = [], time.time()
        if val_images and (step % opts.val_every == 0 or step == opts.steps):
            for row in _validate(ema.model, val_images, opts):
                _append_csv(out / "val.csv", {"step": step, **row})
                log(f"val step={step} lambda={row['lambda']} bpp={row['bpp']:.4f} psnr={row['psnr']:.3f}")
        if time.time() - last_save > 60 * opts.checkpoint_minutes:
            _save(out, student, ema, optimizer, step, opts, time.time() - start)
            last_save = time.time()
    if rank == 0:
        _save(out, student, ema, optimizer, step, opts, time.time() - start)
        log(f"saved step {step} to {out}" + (" (stopped by signal)" if stop.requested else ""))
    if world > 1:
        dist.destroy_process_group()
    return out / "ema.safetensors"


def check_options(opts: TrainOptions) -> None:
    """Reject combinations that have no meaning."""
    if opts.bound and (opts.teacher or opts.shallow_only):
        raise BgcodecError("--bound trains the teacher itself: it takes neither --teacher nor --shallow-only")
    if opts.teacher and opts.shallow_only:
        raise BgcodecError("--teacher guides the whole codec; --shallow-only trains only its shallow synthesis")


def _load_teacher(opts: TrainOptions, model: HierarchicalVAE, device: torch.device) -> BoundVAE:
    teacher = load_bound_model(opts.teacher)
    if teacher.cfg != model.cfg:
        raise BgcodecError(f"{opts.teacher}: the teacher's config differs from the student's ({opts.config}); "
                         "train it with the same --config")
    return teacher.to(device, memory_format=torch.channels_last).requires_grad_(False)


def _objective(trained: torch.nn.Module, teacher: BoundVAE | None, im: torch.Tensor, lmbda: torch.Tensor,
               opts: TrainOptions) -> dict[str, torch.Tensor]:
    """The loss to minimise and the statistics to log, for every kind of run."""
    if opts.shallow_only:
        # The shallow synthesis sees the quantised latents it will see when decoding.
        return rate_distortion(*trained(im, lmbda, noisy=False, synthesis="shallow"), im, lmbda)
    if teacher is None:
        return rate_distortion(*trained(im, lmbda), im, lmbda)
    out, rates, features = trained(im, lmbda)
    stats = rate_distortion(out, rates, im, lmbda)
    feature_loss, reconstruction_loss = guidance_loss(teacher_targets(teacher, im, lmbda), out, features)
    stats["loss"] = stats["loss"] + opts.feature_weight * feature_loss + opts.reconstruction_weight * reconstruction_loss
    return {**stats, "feature_loss": feature_loss.detach(), "teacher_mse": reconstruction_loss.detach()}


def _validate(model: HierarchicalVAE, images: list[np.ndarray], opts: TrainOptions) -> list[dict]:
    """Mean bpp and PSNR per validation λ: real bitstreams for the codec, the KL estimate for
    the bound model."""
    if isinstance(model, BoundVAE):
        return bound_curve(model, images, opts.val_lambdas)
    return codec_curve(model, images, opts.val_lambdas, "shallow" if opts.shallow_only else "full")


def _save(out: Path, trained, ema, optimizer, step, opts, wall_s) -> None:
    save_checkpoint(out / "checkpoint.safetensors", trained, ema, optimizer, step, opts, wall_s)
    export_weights(out / "ema.safetensors", ema.model, step, opts, wall_s)
