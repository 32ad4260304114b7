"""Loading and saving model weights (safetensors only, never pickle).

A weights file carries its own config and λ range in the safetensors metadata, so a
file alone is enough to rebuild the model. ``random:CONFIG[:SEED]`` instead names a
deterministic random initialisation (for tests, and until trained weights ship).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .bound import BoundVAE
from .errors import WeightsError
from .config import CONFIGS, BGVAEConfig, cli_lambda_range, declared_lambda_range, resolve
from .model import BGVAE, HierarchicalVAE

@dataclass
class LoadedModel:
    model: BGVAE
    identity: bytes
    """4 bytes derived from the tensors; a .bgv file records it so other weights refuse it."""
    lambda_range: tuple[float, float]
    """λ range in the CLI (CompressAI) convention."""
    metadata: dict[str, str]


def dense_cpu(tensor: torch.Tensor) -> torch.Tensor:
    """A row-major CPU copy (state dicts of channels_last models have permuted strides)."""
    return torch.empty(tensor.shape, dtype=tensor.dtype).copy_(tensor.detach())


def model_identity(state_dict: dict[str, torch.Tensor]) -> bytes:
    """A short hash of the weights: names, dtypes, shapes and values, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach()
        if tensor.device.type != "cpu" or not tensor.is_contiguous():
            tensor = dense_cpu(tensor)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.digest()[:4]


def in_memory(model: BGVAE, metadata: dict[str, str] | None = None) -> LoadedModel:
    """Wrap a model that was built or trained in this process (no file behind it)."""
    return LoadedModel(model.eval(), model_identity(model.state_dict()), cli_lambda_range(model.cfg),
                       dict(metadata or {}))


def load_model(spec: str | None = None, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load weights by path, bare file name (searched in :func:`search_dirs`) or ``random:`` spec,
    into a model of ``dtype``."""
    spec = resolve(spec)
    if spec.startswith("random:"):
        loaded = _random_model(spec)
        loaded.model.to(dtype)
        return loaded
    model, state, metadata = build_from_file(spec, BGVAE, dtype)
    return LoadedModel(model.eval(), model_identity(state), declared_lambda_range(spec, metadata), metadata)


def _random_model(spec: str) -> LoadedModel:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or parts[1] not in CONFIGS or (len(parts) == 3 and not parts[2].isdigit()):
        raise WeightsError(f"{spec}: expected random:CONFIG[:SEED] with CONFIG in {sorted(CONFIGS)}")
    seed = int(parts[2]) if len(parts) == 3 else 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BGVAE(CONFIGS[parts[1]]).eval()
    return in_memory(model, {"config_name": parts[1], "seed": str(seed)})


def read_weights(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata of a safetensors file, without building a model."""
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: weights file not found")
    try:
        with safe_open(path, framework="pt") as f:
            return {name: f.get_tensor(name) for name in f.keys()}, f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a safetensors weights file ({e})") from None


def read_config(path: str, metadata: dict[str, str]) -> BGVAEConfig:
    """The model config recorded in a weights file's metadata."""
    try:
        return BGVAEConfig.from_dict(json.loads(metadata["config"]))
    except (KeyError, ValueError, TypeError) as e:
        raise WeightsError(f"{path}: weights metadata lacks a valid config ({e})") from None


def state_differences(target: dict[str, torch.Tensor], source: dict[str, torch.Tensor]):
    """Names in ``target`` missing from ``source``, present with another shape, and names
    only ``source`` has; each sorted."""
    missing = sorted(set(target) - set(source))
    mismatched = sorted(k for k in set(target) & set(source) if source[k].shape != target[k].shape)
    unexpected = sorted(set(source) - set(target))
    return missing, mismatched, unexpected


def load_bound_model(path: str) -> BoundVAE:
    """Load a bound model (teacher) written by ``bgcodec train --bound``."""
    return build_from_file(path, BoundVAE)[0].eval()


def build_from_file(path: str, model_class: type[HierarchicalVAE], dtype: torch.dtype = torch.float32):
    """Build a model of ``model_class`` and ``dtype`` from a weights file; returns it, the tensors
    as stored and the metadata."""
    state, metadata = read_weights(path)
    kind = metadata.get("model", BGVAE.kind)
    if kind != model_class.kind:
        raise WeightsError(f"{path}: holds a '{kind}' model, not a '{model_class.kind}' model "
                           + ("(a bound model is a teacher for training; it cannot code images)"
                              if kind == BoundVAE.kind else "(train one with 'bgcodec train --bound')"))
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        model = model_class(read_config(path, metadata))
    expected = model.state_dict()
    missing, mismatched, unexpected = state_differences(expected, state)
    if missing or mismatched or unexpected:
        problems = [f"{len(names)} {what} (e.g. {names[0]})" for what, names in
                    (("missing", missing), ("of another shape", mismatched), ("unknown", unexpected)) if names]
        raise WeightsError(f"{path}: weights do not fit this bgcodec's model: tensors {', '.join(problems)}; "
                           "made by another bgcodec version?")
    model.load_state_dict({name: tensor.to(dtype if tensor.is_floating_point() else tensor.dtype)
                           for name, tensor in state.items()}, strict=True, assign=True)
    return model, state, metadata


def save_model(model: HierarchicalVAE, path: str | os.PathLike, metadata: dict[str, str] | None = None,
               half: bool = False) -> None:
    """Save weights with the config and the λ range (CLI convention) in the metadata.

    ``half`` stores float16 (shipped files must stay under 16 MiB); they load into a
    float32 model, and the model identity is computed from the stored values. Otherwise
    float32 (a float64 model, such as the one a Codec runs, is stored as float32).
    """
    meta = dict(metadata or {})
    meta.update({"format": "bgcodec-weights-1", "model": model.kind, "config": json.dumps(model.cfg.to_dict()),
                 "lambda_range": json.dumps(list(cli_lambda_range(model.cfg)))})
    stored = torch.float16 if half else torch.float32
    state = {k: dense_cpu(v.to(stored) if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=meta)
