"""Image ↔ .bgv bytes with a loaded BG-VAE.

Portability (docs/DESIGN.md, portable bitstreams): the coder's tables are chosen by the
prior scales that the top-down network computes, and a decoder must choose exactly the
encoder's. Every part of the model runs in float64, where kernels of other instruction
sets, thread counts or devices move a value by about 1e-15 of its size; the few scales
that lie closer than ``entropy.PIN_MARGIN`` to a threshold between two table entries are
pinned, their index stored in the file, so no drift below that margin can change a table.
The probability path (the top-down network) runs on the CPU; the bottom-up analysis and
the synthesis may run on a GPU. SGA (``effort`` > 0) optimises in float32: its result is
the encoder's free choice of latents, which the float64 path then codes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from . import container, entropy, lambdas, resources, sga
from .config import DEVICES, EFFORT_ITERATIONS, TILE_SIZE
from .errors import BgcodecError, FormatError
from .imageio import DEFAULT_MAX_PIXELS
from .model import PAD_MULTIPLE, BGVAE
from .progress import Progress, no_progress
from .seams import smooth_tile_borders
from .weights import LoadedModel, load_model

PRECISION = torch.float64


def pick_device(device: str) -> torch.device:
    """The torch device for one of config.DEVICES; auto is CUDA when available."""
    device = device.lower()
    if device not in DEVICES:
        raise BgcodecError(f"unknown device {device!r} (use {', '.join(DEVICES)})")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BgcodecError("--device cuda: no CUDA device is available")
    return torch.device(device)


def image_to_tensor(image: np.ndarray, dtype: torch.dtype = PRECISION) -> torch.Tensor:
    """HxWx3 uint8 → 1x3xH'xW' in [0, 1], edge-padded at the bottom and right to multiples of 64."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise BgcodecError(f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    x = torch.tensor(image).permute(2, 0, 1)[None].to(dtype) / 255
    h, w = image.shape[:2]
    pad_h, pad_w = -h % PAD_MULTIPLE, -w % PAD_MULTIPLE
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


def split_planes(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """An HxW or HxWxC uint8 image (C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA) as the HxWx3 RGB
    the model codes, its alpha plane (or None) and whether it is gray."""
    image = np.asarray(image)
    planes = image[..., None] if image.ndim == 2 else image
    if planes.ndim != 3 or planes.shape[2] not in (1, 2, 3, 4) or planes.dtype != np.uint8:
        raise BgcodecError(f"expected an HxW or HxWxC uint8 image with C = 1..4 channels, got shape {image.shape} "
                           f"dtype {image.dtype}")
    gray = planes.shape[2] in (1, 2)
    alpha = planes[..., -1] if planes.shape[2] in (2, 4) else None
    colour = np.repeat(planes[..., :1], 3, axis=2) if gray else planes[..., :3]
    return np.ascontiguousarray(colour), alpha, gray


def join_planes(rgb: np.ndarray, alpha: np.ndarray | None, gray: bool) -> np.ndarray:
    """The decoded image in the input's channels: a gray image's colour channels averaged into one."""
    colour = ((rgb.astype(np.uint16).sum(axis=2, keepdims=True) + 1) // 3).astype(np.uint8) if gray else rgb
    return colour if alpha is None else np.concatenate([colour, alpha[..., None]], axis=2)


def tensor_to_image(out: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Decoder output in [-1, 1] (1x3xH'xW') → HxWx3 uint8, cropped to the original size."""
    pixels = ((out[0, :, :height, :width].clamp(-1, 1) + 1) * 127.5).round()
    return pixels.to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _pins(indices: list[np.ndarray], log_scales: list[np.ndarray]) -> tuple[tuple[int, int, int], ...]:
    """(latent, flat position, index) of every scale the encoder must pin (docs/FORMAT.md §6)."""
    return tuple((latent, int(position), int(idx.flat[position]))
                 for latent, (idx, log_scale) in enumerate(zip(indices, log_scales))
                 for position in entropy.near_threshold(log_scale, entropy.PIN_MARGIN))


def _pins_by_latent(pins: tuple[tuple[int, int, int], ...], name: str) -> dict[int, tuple[list[int], list[int]]]:
    """The file's pinned scales as {latent: (positions, indices)}."""
    by_latent: dict[int, tuple[list[int], list[int]]] = {}
    for latent, position, index in pins:
        if index >= entropy.SCALE_LEVELS:
            raise FormatError(f"{name}: a pinned scale index {index} is past the table's {entropy.SCALE_LEVELS}")
        positions, values = by_latent.setdefault(latent, ([], []))
        positions.append(position)
        values.append(index)
    return by_latent


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """SGA runs in float32, whose CPU results depend on the thread count: on one thread the
    same input gives the same file on a machine, however busy it is."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _check_effort(effort: int) -> None:
    if effort not in EFFORT_ITERATIONS:
        raise BgcodecError(f"effort must be one of {sorted(EFFORT_ITERATIONS)}, got {effort}")


def _check_tile_size(tile_size: int) -> None:
    if tile_size <= 0 or tile_size % container.TILE_MULTIPLE:
        raise BgcodecError(f"tile size must be a positive multiple of {container.TILE_MULTIPLE}, got {tile_size}")


def _tile_progress(progress: Progress, tile: int, tiles: int) -> Progress:
    """The progress of one tile's work as a share of the whole image's."""
    if tiles == 1:
        return progress
    return lambda done, total, label: progress(tile * total + done, tiles * total, f"tile {tile + 1}/{tiles}")


TileRunner = Callable[[Callable, Iterable], Iterator]
"""Runs ``work(codec, task)`` for each tile's task and yields the results in order. A Codec
runs its tiles itself; the command line passes a runner that hands them to worker processes,
each with its own Codec (tasks and results are picklable)."""


@dataclasses.dataclass(frozen=True)
class _TileEncoding:
    rgb: np.ndarray
    lmbda_model: float
    depth: int
    synthesis: str
    effort: int
    lossless_fallback: bool
    reconstruct: bool


def _encode_tile(codec: "Codec", task: _TileEncoding,
                 progress: Progress = no_progress) -> tuple[bytes, bool, np.ndarray | None]:
    """A tile's file, whether it is learned (not stored losslessly), and with
    ``task.reconstruct`` the pixels the decoder will produce."""
    header, streams, h = codec._code_colours(task.rgb, task.lmbda_model, task.depth, task.synthesis, task.effort,
                                             progress)
    data = container.pack(header, streams)
    lossless = _lossless(header, task.rgb) if task.lossless_fallback else None
    if lossless is not None and len(lossless) < len(data):
        return lossless, False, task.rgb if task.reconstruct else None
    height, width = task.rgb.shape[:2]
    pixels = codec._synthesize(h, task.lmbda_model, height, width, task.synthesis) if task.reconstruct else None
    return data, True, pixels


@dataclasses.dataclass(frozen=True)
class _TileDecoding:
    data: bytes
    name: str
    synthesis: str | None


def _decode_tile(codec: "Codec", task: _TileDecoding, progress: Progress = no_progress) -> tuple[np.ndarray, bool]:
    """A tile's RGB pixels and whether it is learned."""
    header, streams = container.unpack(task.data, task.name)
    if header.pixels is not None:
        return _lossless_pixels(header), False
    return codec._decode_colours(header, streams, task.name, task.synthesis), True


def _check_synthesis(synthesis: str) -> None:
    if synthesis not in container.SYNTHESIS_KINDS:
        raise BgcodecError(f"synthesis must be one of {', '.join(container.SYNTHESIS_KINDS)}, got {synthesis!r}")


def _lossless(header: container.Header, planes: np.ndarray) -> bytes:
    """The file of ``header`` with its image stored losslessly instead of learned."""
    return container.pack(dataclasses.replace(header, pins=(), gray=False, alpha=None, index_checksum=0,
                                              pixels=planes.tobytes(), channels=planes.shape[2]), [])


def _lossless_pixels(header: container.Header) -> np.ndarray:
    return np.frombuffer(header.pixels, np.uint8).reshape(header.height, header.width, header.channels).copy()


class Codec:
    """A loaded model plus the devices it runs on. Reuse one instance for many images."""

    def __init__(self, loaded: LoadedModel, device: torch.device):
        self.model: BGVAE = loaded.model.eval()
        if next(self.model.parameters()).dtype != PRECISION:
            self.model.to(PRECISION)
        self.identity = loaded.identity
        self.lambda_range = loaded.lambda_range
        self.metadata = loaded.metadata
        self.device = device
        # The CPU model always computes the priors; a GPU copy may do analysis and synthesis.
        self.accelerated = self.model if device.type == "cpu" else self._copy(device, PRECISION)
        self._sga_model: BGVAE | None = None

    def _copy(self, device: torch.device, dtype: torch.dtype) -> BGVAE:
        model = BGVAE(self.model.cfg).to(device, dtype).eval()
        model.load_state_dict(self.model.state_dict())
        return model

    @classmethod
    def load(cls, weights: str | None = None, device: str = "auto") -> "Codec":
        return cls(load_model(weights, PRECISION), pick_device(device))

    @staticmethod
    def _lambda_tensor(model: BGVAE, lmbda_model: float) -> torch.Tensor:
        parameter = next(model.parameters())
        return torch.tensor([lmbda_model], dtype=parameter.dtype, device=parameter.device)

    def check_lambda(self, lmbda: float) -> float:
        """Validate a CLI-convention λ and return the model-convention λ as stored (float32)."""
        lambdas.check_in_range(lmbda, self.lambda_range)
        return float(np.float32(lambdas.to_model(lmbda)))

    @torch.no_grad()
    def encode(self, image: np.ndarray, lmbda: float, *, depth: int | None = None, synthesis: str = "full",
               effort: int = 0, progress: Progress = no_progress, lossless_fallback: bool = True,
               metadata: dict[str, bytes] | None = None, return_reconstruction: bool = False,
               tile_size: int = TILE_SIZE, tile_runner: TileRunner | None = None):
        """Compress an image at λ (CLI convention) into .bgv bytes.

        ``image`` is HxW or HxWxC uint8 with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4
        (RGBA): the model codes the colours, the alpha plane is kept losslessly, and a gray
        image decodes gray. With ``lossless_fallback`` an image (or tile) that takes fewer
        bytes stored losslessly (tiny images, strips) is stored so. ``metadata`` ("icc",
        "exif", "xmp" bytes, see imageio.read_metadata) is carried in the file as it is.
        An image larger than ``tile_size`` on a side is coded as independent tiles
        (container.tile_boxes), one at a time, reporting each to ``progress``, or by
        ``tile_runner`` (see TileRunner).
        ``depth`` keeps only the first latents (the rest decode to their prior means).
        ``synthesis`` ("full" or "shallow") is recorded as the file's default decoder.
        ``effort`` > 0 refines the latents with SGA for that synthesis
        (``config.EFFORT_ITERATIONS``), reporting each iteration to ``progress``.
        With ``return_reconstruction`` also returns the image the decoder will produce.
        """
        rgb, alpha, gray = split_planes(image)
        lmbda_model = self.check_lambda(lmbda)
        depth = self._check_depth(depth)
        _check_synthesis(synthesis)
        _check_effort(effort)
        _check_tile_size(tile_size)
        height, width = rgb.shape[:2]
        boxes = container.tile_boxes(height, width, tile_size)
        resources.check_memory(width, height, resources.encoding_bytes_per_pixel(effort), "<image>", "encoding",
                               tile_pixels=boxes[0][2] * boxes[0][3])
        parts = dict(gray=gray, alpha=None if alpha is None else alpha.tobytes(), **(metadata or {}))
        if len(boxes) == 1:
            header, streams, h = self._code_colours(rgb, lmbda_model, depth, synthesis, effort, progress)
            data = container.pack(dataclasses.replace(header, **parts), streams)
            planes = join_planes(rgb, alpha, gray)
            if lossless_fallback:
                lossless = _lossless(dataclasses.replace(header, **parts), planes)
                if len(lossless) < len(data):
                    return (lossless, planes) if return_reconstruction else lossless
            if not return_reconstruction:
                return data
            return data, join_planes(self._synthesize(h, lmbda_model, height, width, synthesis), alpha, gray)
        tasks = (_TileEncoding(np.ascontiguousarray(rgb[top:top + h, left:left + w]), lmbda_model, depth, synthesis,
                               effort, lossless_fallback, return_reconstruction) for top, left, h, w in boxes)
        tiles, learned = [], []
        reconstruction = np.empty_like(rgb) if return_reconstruction else None
        for number, (tile, is_learned, pixels) in enumerate(self._run_tiles(_encode_tile, tasks, len(boxes), progress,
                                                                             tile_runner, effort)):
            tiles.append(tile)
            learned.append(is_learned)
            if reconstruction is not None:
                top, left, h, w = boxes[number]
                reconstruction[top:top + h, left:left + w] = pixels
        if reconstruction is not None:
            smooth_tile_borders(reconstruction, boxes, learned)
        header = container.Header(model_id=self.identity, lmbda=lmbda_model, height=height, width=width,
                                  synthesis=synthesis, index_checksum=0, tile_size=tile_size, tiles=tuple(tiles),
                                  **parts)
        data = container.pack(header, [])
        return (data, join_planes(reconstruction, alpha, gray)) if return_reconstruction else data

    def _run_tiles(self, work: Callable, tasks: Iterable, count: int, progress: Progress,
                   runner: TileRunner | None, effort: int = 0) -> Iterator:
        """``work(codec, task)`` of each of the ``count`` tiles, in order: here, one task made
        at a time (with each tile's share of ``progress`` when it reports iterations), or by
        ``runner``; ``progress`` counts tiles."""
        results = (runner(work, tasks) if runner is not None else
                   (work(self, task, _tile_progress(progress, number, count) if effort else no_progress)
                    for number, task in enumerate(tasks)))
        for number, result in enumerate(results):
            if not effort or runner is not None:
                progress(number + 1, count, f"tile {number + 1}/{count}")
            yield result

    def _check_depth(self, depth: int | None) -> int:
        num_latents = self.model.cfg.num_latents
        depth = num_latents if depth is None else depth
        if not 1 <= depth <= num_latents:
            raise BgcodecError(f"depth must be in 1..{num_latents}, got {depth}")
        return depth

    def _code_colours(self, rgb: np.ndarray, lmbda_model: float, depth: int, synthesis: str, effort: int,
                      progress: Progress) -> tuple[container.Header, list[bytes], torch.Tensor]:
        """The header and latent streams of an RGB image, and the synthesis input the decoder will rebuild."""
        height, width = rgb.shape[:2]
        x = image_to_tensor(rgb).to(self.device)
        taps = self.accelerated.analyse(x, self._lambda_tensor(self.accelerated, lmbda_model))
        residuals = self._optimise(x, taps, lmbda_model, effort, synthesis, height, width, progress) if effort else None
        symbols, log_scales = [], []
        parts = self.model.cfg.parts_of(depth)

        def choose(i: int, log_scale: torch.Tensor, encoder_residual: Callable[[], torch.Tensor]) -> torch.Tensor:
            if i >= parts:  # not transmitted: the part takes its prior mean, as in the decoder
                return torch.zeros_like(log_scale)
            k = torch.round(encoder_residual() if residuals is None else residuals[i].to(log_scale.dtype))
            symbols.append(k.numpy().astype(np.int64))
            log_scales.append(log_scale.numpy())
            return k

        h = self.model.encode_latents([t.cpu() for t in taps], self._lambda_tensor(self.model, lmbda_model), choose)
        indices = [entropy.scale_indices(s) for s in log_scales]
        streams = [entropy.encode_symbols(s, i) for s, i in zip(symbols, indices)]
        header = container.Header(model_id=self.identity, lmbda=lmbda_model, height=height, width=width,
                                  synthesis=synthesis, index_checksum=entropy.indices_checksum(indices),
                                  pins=_pins(indices, log_scales))
        return header, streams, h

    def _optimise(self, x: torch.Tensor, taps: list[torch.Tensor], lmbda_model: float, effort: int, synthesis: str,
                  height: int, width: int, progress: Progress) -> list[torch.Tensor]:
        """SGA's residuals for every latent, optimised in float32 on the analysis device."""
        if self._sga_model is None:
            self._sga_model = self._copy(self.device, torch.float32)
        iterations = EFFORT_ITERATIONS[effort]
        with _one_thread():
            residuals = sga.optimise_latents(self._sga_model, x.float(), [t.float() for t in taps],
                                             self._lambda_tensor(self._sga_model, lmbda_model), iterations, synthesis,
                                             height, width, progress)
        return [r.to("cpu", PRECISION) for r in residuals]

    @torch.no_grad()
    def decode(self, data: bytes, name: str = "<input>", max_pixels: int = DEFAULT_MAX_PIXELS,
               synthesis: str | None = None, progress: Progress = no_progress,
               tile_runner: TileRunner | None = None) -> np.ndarray:
        """Decompress .bgv bytes into an HxWxC uint8 image with the channels that were encoded
        (1 gray, 2 gray + alpha, 3 RGB, 4 RGBA); raises FormatError naming ``name``.

        Files claiming more than ``max_pixels`` pixels are refused before any work.
        ``synthesis`` overrides the file's recorded synthesis ("full" or "shallow").
        The tiles of a tiled file are decoded one at a time, each reported to ``progress``,
        or by ``tile_runner`` (see TileRunner).
        """
        if synthesis is not None:
            _check_synthesis(synthesis)
        header, streams = container.unpack(data, name)
        if header.height * header.width > max_pixels:
            raise FormatError(f"{name}: image of {header.width}x{header.height} pixels exceeds the limit of "
                              f"{max_pixels} pixels (see --max-pixels)")
        if header.pixels is not None:  # stored losslessly: no model needed
            return _lossless_pixels(header)
        if header.model_id != self.identity:
            raise FormatError(f"{name}: encoded with model {header.model_id.hex()}, but the loaded weights are "
                              f"{self.identity.hex()} (pass the matching --weights)")
        if header.tiles is None:
            resources.check_memory(header.width, header.height, resources.DECODE_BYTES_PER_PIXEL, name, "decoding",
                                   tile_pixels=header.width * header.height)  # a file of an older bgcodec may be large
            rgb = self._decode_colours(header, streams, name, synthesis)
        else:
            rgb = self._decode_tiles(header, name, synthesis, progress, tile_runner)
        alpha = None if header.alpha is None else np.frombuffer(header.alpha, np.uint8).reshape(rgb.shape[:2])
        return join_planes(rgb, alpha, header.gray)

    def _decode_tiles(self, header: container.Header, name: str, synthesis: str | None, progress: Progress,
                      runner: TileRunner | None) -> np.ndarray:
        """The RGB image of a tiled file, its seams filtered."""
        boxes = container.tile_boxes(header.height, header.width, header.tile_size)
        resources.check_memory(header.width, header.height, resources.DECODE_BYTES_PER_PIXEL, name, "decoding",
                               tile_pixels=boxes[0][2] * boxes[0][3])
        rgb = np.empty((header.height, header.width, 3), np.uint8)
        tasks = (_TileDecoding(tile, f"{name}: tile {number + 1}", synthesis) for number, tile in enumerate(header.tiles))
        learned = []
        for (top, left, height, width), (pixels, is_learned) in zip(
                boxes, self._run_tiles(_decode_tile, tasks, len(boxes), progress, runner)):
            rgb[top:top + height, left:left + width] = pixels
            learned.append(is_learned)
        smooth_tile_borders(rgb, boxes, learned)
        return rgb

    def _decode_colours(self, header: container.Header, streams: list[bytes], name: str,
                        synthesis: str | None) -> np.ndarray:
        """The RGB image of a learned file's latent streams, one per coded part."""
        parts = len(streams)
        if parts > self.model.cfg.num_parts:
            raise FormatError(f"{name}: file has {parts} latent streams, the model only {self.model.cfg.num_parts}")
        pins = _pins_by_latent(header.pins, name)
        indices = []

        def choose(i: int, log_scale: torch.Tensor, encoder_residual: None) -> torch.Tensor:
            if i >= parts:  # not in the file: the part takes its prior mean
                return torch.zeros_like(log_scale)
            idx = entropy.scale_indices(log_scale.numpy())
            positions, values = pins.get(i, ([], []))
            if len(positions) and positions[-1] >= idx.size:
                raise FormatError(f"{name}: latent {i + 1}: a pinned scale lies outside the latent")
            idx.reshape(-1)[positions] = values
            indices.append(idx)
            try:
                symbols = entropy.decode_symbols(streams[i], idx)
            except FormatError as e:
                raise FormatError(f"{name}: latent {i + 1}: {e}") from None
            return torch.from_numpy(symbols).to(log_scale.dtype)

        grid = (math.ceil(header.height / PAD_MULTIPLE), math.ceil(header.width / PAD_MULTIPLE))
        h = self.model.decode_latents(self._lambda_tensor(self.model, header.lmbda), grid, choose)
        if entropy.indices_checksum(indices) != header.index_checksum:
            raise FormatError(f"{name}: the decoder rebuilt different probabilities than the encoder "
                              "(scale-index checksum mismatch); the file is corrupt")
        return self._synthesize(h, header.lmbda, header.height, header.width, synthesis or header.synthesis)

    def _synthesize(self, h: torch.Tensor, lmbda_model: float, height: int, width: int, synthesis: str) -> np.ndarray:
        out = self.accelerated.synthesize(h.to(self.device), self._lambda_tensor(self.accelerated, lmbda_model),
                                          synthesis)
        return tensor_to_image(out, height, width)
