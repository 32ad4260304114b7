"""What a training run reads and writes besides its logs: the weights it starts from
(``--init``), its checkpoints (``--resume``) and the exported weights.

Checkpoints are safetensors too: the tensors of the trained module, of the EMA model and
of the optimizer's state (and of the regularisers' models with their optimizers), with
the step, the options and the optimizers' parameter groups as JSON metadata.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import WeightsError
from ..eval import system
from ..files import atomic_path
from ..model import HierarchicalVAE
from ..weights import dense_cpu, read_config, read_weights, save_model, state_differences
from .options import TrainOptions
from .widening import grow_tensor


_PER_POSITION_HEAD_BIAS, _SHARED_HEAD_BIAS = "synthesis.head.0.bias", "synthesis.head.2.bias"


def init_from(model: HierarchicalVAE, path: str) -> tuple[list[str], list[str]]:
    """Copy every tensor whose name matches: as it is where the shape matches too, grown
    (bgcodec.train.widening) where the file's config is narrower. Returns the names of the
    grown tensors and of those not copied."""
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
    converted, consumed = _converted(source, target)
    grown.update(converted)
    missing = [name for name in missing if name not in converted]
    unused = [name for name in unused if name not in consumed]
    skipped = set(mismatched) | set(unused) | consumed
    model.load_state_dict({**{k: v for k, v in source.items() if k not in skipped}, **grown}, strict=False)
    return sorted(grown), sorted(missing + not_grown) + [f"{k} (unused)" for k in unused]


def _converted(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
               ) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Tensors of ``target`` that a file of an older head or upsampling layout initialises:
    the new tensors and the names of the source tensors they were made from."""
    converted, consumed = {}, set()
    old_head = "synthesis.head.0.weight"
    old_bias = _PER_POSITION_HEAD_BIAS if _PER_POSITION_HEAD_BIAS in source else _SHARED_HEAD_BIAS
    if old_bias in source and _SHARED_HEAD_BIAS in target and _SHARED_HEAD_BIAS not in source:
        converted[_SHARED_HEAD_BIAS] = source[old_bias].view(3, -1).mean(1)
        consumed.add(old_bias)
    if "synthesis.head.colour.weight" in target and old_head in source:
        # ZeroSumPatternHead: each colour's mean map, and the sub-positions' deviations from it
        weight, bias = source[old_head].unflatten(0, (3, -1)), source[old_bias].view(3, -1)
        colour, colour_bias = weight.mean(1), bias.mean(1)
        converted.update({"synthesis.head.colour.weight": colour, "synthesis.head.colour.bias": colour_bias,
                          "synthesis.head.pattern.0.weight": (weight - colour[:, None]).flatten(0, 1),
                          "synthesis.head.pattern.0.bias": (bias - colour_bias[:, None]).expand(3, 16).flatten()})
        consumed |= {old_head, old_bias}
    for name in target:
        if name.endswith(".up.low.weight") and name.replace(".low.", ".proj.") in source:
            # WaveletUp(dc_free): the bands as they were, the low one apart
            prefix = name[:-len("low.weight")]
            weight, bias = source[prefix + "proj.weight"], source[prefix + "proj.bias"]
            low = weight.shape[0] // 4
            converted.update({name: weight[:low], prefix + "low.bias": bias[:low],
                              prefix + "detail.0.weight": weight[low:], prefix + "detail.0.bias": bias[low:]})
            consumed |= {prefix + "proj.weight", prefix + "proj.bias"}
    return {name: value.to(target[name].dtype) for name, value in converted.items()}, consumed


def save_checkpoint(path: Path, trained: torch.nn.Module, ema_model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, step: int, opts: TrainOptions, wall_s: float,
                    regularisers: dict | None = None) -> None:
    """``trained`` is what the optimizer trains: the model, or a GuidedStudent (model and
    projectors). ``regularisers`` (by prefix) have a model and an optimizer of their own."""
    tensors = {f"model.{k}": v for k, v in trained.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema_model.state_dict().items()})
    tensors.update(_optimizer_tensors("optim", optimizer))
    meta = {"step": str(step), "wall_seconds": str(round(wall_s, 1)), "options": json.dumps(dataclasses.asdict(opts)),
            "param_groups": json.dumps(optimizer.state_dict()["param_groups"])}
    for prefix, regulariser in (regularisers or {}).items():
        tensors.update({f"{prefix}.{k}": v for k, v in regulariser.model.state_dict().items()})
        tensors.update(_optimizer_tensors(f"{prefix}_optim", regulariser.optimizer))
        meta[f"{prefix}_param_groups"] = json.dumps(regulariser.optimizer.state_dict()["param_groups"])
    with atomic_path(path) as tmp:
        save_file({k: dense_cpu(v) for k, v in tensors.items()}, tmp, metadata=meta)


def load_checkpoint(path: Path, trained: torch.nn.Module, ema_model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, regularisers: dict | None = None) -> tuple[int, float]:
    """Restore a checkpoint; returns the step and the wall time spent so far. A regulariser
    that the checkpoint lacks (the run was started without it) starts fresh."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    trained.load_state_dict(_with_prefix(tensors, "model."))
    ema_model.load_state_dict(_with_prefix(tensors, "ema."))
    _load_optimizer(optimizer, tensors, "optim.", meta["param_groups"])
    for prefix, regulariser in (regularisers or {}).items():
        if f"{prefix}_param_groups" in meta:
            regulariser.model.load_state_dict(_with_prefix(tensors, f"{prefix}."))
            _load_optimizer(regulariser.optimizer, tensors, f"{prefix}_optim.", meta[f"{prefix}_param_groups"])
    return int(meta["step"]), float(meta.get("wall_seconds", 0))


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{index}.{key}": value if torch.is_tensor(value) else torch.tensor(value)
            for index, state in optimizer.state_dict()["state"].items() for key, value in state.items()}


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str,
                    param_groups: str) -> None:
    state: dict[int, dict] = {}
    for k, v in _with_prefix(tensors, prefix).items():
        index, key = k.split(".", 1)
        state.setdefault(int(index), {})[key] = v
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(param_groups)})


def export_weights(path: Path, model: HierarchicalVAE, step: int, opts: TrainOptions, wall_s: float) -> None:
    """Write inference weights with config, λ range and training provenance in the metadata."""
    provenance = {
        "steps": step, "batch_size": opts.batch_size, "crop": opts.crop, "lr": opts.lr,
        "data": [str(d) for d in opts.data], "downscale_jpeg": opts.downscale_jpeg,
        "seed": opts.seed, "lambda_sampling": opts.sampled_lambdas, "synthetic_share": opts.synthetic_share,
        "it_weight": opts.it_weight, "cca_weight": opts.cca_weight,
        "init": opts.init, "teacher": opts.teacher,
        "guidance_weights": [opts.feature_weight, opts.reconstruction_weight] if opts.teacher else None,
        "wall_seconds": round(wall_s),
        "hardware": hardware_description(), "torch": torch.__version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    with atomic_path(path) as tmp:
        save_model(model, tmp, {"config_name": opts.config, "training": json.dumps(provenance)})


def hardware_description() -> str:
    """What trained: the GPUs, or the CPU threads (for the weights' provenance)."""
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return f"{torch.get_num_threads()} threads of {system.cpu_model()}"
