"""Bound-guided training: the frozen bound model teaches the codec.

Features are taken at the 8 points where the resolution changes: after each wavelet
downsampling of the bottom-up path (strides 8, 16, 32, 64) and before each wavelet
upsampling of the top-down path (strides 64, 32, 16, 8). The student's features pass
through a projector ensemble (training-only); the guidance compares the affinity
matrices (cosine similarity between spatial positions) of teacher and student with
L1 + cosine distance, and the two reconstructions with MSE.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import BConvNeXt
from ..model import HierarchicalVAE


def feature_points(model: HierarchicalVAE) -> list[tuple[nn.Module, bool]]:
    """(module, take its output?) for each guidance point; otherwise its input is taken."""
    downs = [(down, True) for down in model.encoder.downs]
    ups = [(t.up, False) for t in [*model.transitions, model.synthesis.transition]]
    return downs + ups


def feature_widths(model: HierarchicalVAE) -> list[int]:
    cfg = model.cfg
    return list(cfg.enc_widths[1:]) + list(cfg.dec_widths[:4])


@contextlib.contextmanager
def captured_features(model: HierarchicalVAE) -> Iterator[list[torch.Tensor]]:
    """Collect the guidance features of every forward pass run inside the block."""
    features: list[torch.Tensor] = []
    handles = []
    for module, output in feature_points(model):
        if output:
            handles.append(module.register_forward_hook(lambda m, args, out: features.append(out)))
        else:
            handles.append(module.register_forward_pre_hook(lambda m, args: features.append(args[0])))
    try:
        yield features
    finally:
        for handle in handles:
            handle.remove()


def affinity(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, N, N) with N = H·W: cosine similarity between spatial positions."""
    f = features.float().flatten(2)
    f = f / (f.norm(dim=1, keepdim=True) + 1e-8)
    return f.transpose(1, 2) @ f


def affinity_distance(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance plus (1 − cosine similarity) of two batches of affinity matrices."""
    l1 = (teacher - student).abs().mean()
    cosine = F.cosine_similarity(teacher.flatten(1), student.flatten(1), dim=1).mean()
    return l1 + 1 - cosine


class Projectors(nn.Module):
    """Per guidance point, an ensemble of two λ-conditioned B-ConvNeXt blocks whose outputs
    are averaged (training-only: not part of the exported weights)."""

    def __init__(self, widths: list[int]):
        super().__init__()
        self.pairs = nn.ModuleList(nn.ModuleList([BConvNeXt(w, 3), BConvNeXt(w, 3)]) for w in widths)

    def forward(self, features: list[torch.Tensor], emb: torch.Tensor) -> list[torch.Tensor]:
        return [0.5 * (a(f, emb) + b(f, emb)) for (a, b), f in zip(self.pairs, features)]


class GuidedStudent(nn.Module):
    """The codec and its projectors as one module (so DistributedDataParallel syncs both).

    ``forward`` returns the codec's (reconstruction, rates) and the projected features."""

    def __init__(self, student: HierarchicalVAE):
        super().__init__()
        self.student = student
        self.projectors = Projectors(feature_widths(student))

    def forward(self, im: torch.Tensor, lmbda: torch.Tensor):
        with captured_features(self.student) as features:
            out, rates = self.student(im, lmbda)
        return out, rates, self.projectors(features, self.student.condition(lmbda)[0])


@torch.no_grad()
def teacher_targets(teacher: HierarchicalVAE, im: torch.Tensor, lmbda: torch.Tensor):
    """The teacher's reconstruction and the affinity matrices of its features, at the
    students' λ, with z = μq (the posterior means: less noisy targets than samples)."""
    with captured_features(teacher) as features:
        out, _ = teacher(im, lmbda, sample=False)
    return out.float(), [affinity(f) for f in features]


def guidance_loss(targets, out: torch.Tensor, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The feature-affinity loss (summed over the points) and the reconstruction loss."""
    teacher_out, teacher_affinities = targets
    feature_loss = sum(affinity_distance(a, affinity(f)) for a, f in zip(teacher_affinities, features))
    return feature_loss, (out.float() - teacher_out).pow(2).mean()
