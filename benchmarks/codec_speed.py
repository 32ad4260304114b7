"""Encode / decode speed of bgcodec on the CPU.

For each image: the model-only encode time (``Codec.encode``: bytes out, no file I/O) and
decode time (``Codec.decode``), each the median of ``--repeat`` runs after one warm-up,
and the bit rate. Prints a Markdown table and a summary line.

Decoding is timed with the full and with the shallow synthesis. ``--breakdown`` also
splits the first image's times into analysis (bottom-up), the top-down probability path,
entropy coding and the parts of the full synthesis. ``--cli`` also times whole
``bgcodec encode`` / ``bgcodec decode`` processes (start-up, model loading, file I/O) on the
first image. ``--threads`` sets torch's CPU threads (default: torch's own count).

    python benchmarks/codec_speed.py --limit 2
    python benchmarks/codec_speed.py --weights random:small --breakdown --cli
"""

from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bgcodec import container, entropy  # noqa: E402
from bgcodec.imageio import save_image  # noqa: E402
from bgcodec.codec import PRECISION, Codec, image_to_tensor, tensor_to_image  # noqa: E402
from bgcodec.model import PAD_MULTIPLE  # noqa: E402
from bgcodec.eval.system import cpu_model  # noqa: E402
from bgcodec.config import resolve  # noqa: E402

DEFAULT_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff", ".webp"}


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def median_time(fn, repeat: int, warmup: int = 1):
    """Run ``fn`` ``warmup`` times untimed, then ``repeat`` times; return (median seconds, last result)."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def breakdown(codec: Codec, image: np.ndarray, lmbda: float, repeat: int) -> list[tuple[str, float]]:
    """Time the pieces of Codec.encode / Codec.decode on the CPU model (same calls, in order)."""
    model = codec.model
    lmbda_model = codec.check_lambda(lmbda)
    height, width = image.shape[:2]
    rows = []

    with torch.no_grad():
        lm = torch.tensor([lmbda_model], dtype=PRECISION)
        t, _ = median_time(lambda: model.condition(lm), repeat)
        rows.append(("λ embedding (per call below)", t))
        t, x = median_time(lambda: image_to_tensor(image), repeat)
        rows.append(("encode: image → tensor (pad)", t))
        t, taps = median_time(lambda: model.analyse(x, lm), repeat)
        rows.append(("encode: analysis (bottom-up)", t))
        def encode_top_down():
            symbols, log_scales = [], []

            def choose(i, log_scale, encoder_residual):
                k = torch.round(encoder_residual())
                symbols.append(k.numpy().astype(np.int64))
                log_scales.append(log_scale.numpy())
                return k

            return symbols, log_scales, model.encode_latents(taps, lm, choose)

        t, (symbols, log_scales, h) = median_time(encode_top_down, repeat)
        rows.append(("encode: top-down probability path", t))
        t, indices = median_time(lambda: [entropy.scale_indices(s) for s in log_scales], repeat)
        rows.append(("encode: scale indices", t))
        t, _ = median_time(lambda: [entropy.near_threshold(s) for s in log_scales], repeat)
        rows.append(("encode: pinned scales", t))
        t, streams = median_time(lambda: [entropy.encode_symbols(s, i) for s, i in zip(symbols, indices)], repeat)
        rows.append(("encode: entropy coding (ANS)", t))

        def pack():
            header = container.Header(model_id=codec.identity, lmbda=lmbda_model, height=height, width=width,
                                      synthesis="full", index_checksum=entropy.indices_checksum(indices))
            return container.pack(header, streams)

        t, data = median_time(pack, repeat)
        rows.append(("encode: index checksum + container", t))

        t, (header, streams) = median_time(lambda: container.unpack(data), repeat)
        rows.append(("decode: container", t))
        grid = (math.ceil(height / PAD_MULTIPLE), math.ceil(width / PAD_MULTIPLE))
        coding, dec_indices = [], []

        def read_symbols(i, log_scale, encoder_residual):
            t0 = time.perf_counter()
            idx = entropy.scale_indices(log_scale.numpy())
            dec_indices.append(idx)
            out = torch.from_numpy(entropy.decode_symbols(streams[i], idx)).to(log_scale.dtype)
            coding[-1] += time.perf_counter() - t0
            return out

        def top_down():
            coding.append(0.0)
            dec_indices.clear()
            return model.decode_latents(lm, grid, read_symbols)

        t, h_dec = median_time(top_down, repeat)
        t_coding = statistics.median(coding[1:]) if len(coding) > 1 else coding[0]
        rows.append(("decode: top-down probability path", t - t_coding))
        rows.append(("decode: scale indices + entropy decoding (ANS)", t_coding))
        t, _ = median_time(lambda: entropy.indices_checksum(dec_indices), repeat)
        rows.append(("decode: index checksum", t))
        emb = model.condition(lm)[0]
        full = model.synthesis
        t, low = median_time(lambda: full.transition.block(h_dec, emb), repeat)
        rows.append(("decode: full synthesis: stride-8 block", t))
        t, high = median_time(lambda: full.transition.up(low), repeat)
        rows.append(("decode: full synthesis: wavelet ×2 up", t))
        if full.transition.attention is not None:
            t, high = median_time(lambda: full.transition.attention(high, low), repeat)
            rows.append(("decode: full synthesis: cross-attention at stride 4", t))

        def stride4_blocks():
            x = high
            for block in full.blocks:
                x = block(x, emb)
            return x

        t, x4 = median_time(stride4_blocks, repeat)
        rows.append(("decode: full synthesis: stride-4 blocks", t))
        t, out = median_time(lambda: full.head(x4), repeat)
        rows.append(("decode: full synthesis: ×4 head", t))
        t, decoded = median_time(lambda: tensor_to_image(out, height, width), repeat)
        rows.append(("decode: tensor → image", t))
        t, _ = median_time(lambda: save_image(decoded, io.BytesIO(), format="png"), repeat)
        rows.append(("decode: PNG writing", t))
        t, _ = median_time(lambda: model.synthesize(h_dec, lm, "shallow"), repeat)
        rows.append(("(instead of the full synthesis: shallow synthesis)", t))
    return rows


def print_cli_times(path: Path, weights: str | None, lmbda: float, repeat: int) -> None:
    """Median wall time of whole `bgcodec encode` / `bgcodec decode` processes, with this
    process's thread count."""
    extra = ["--weights", weights] if weights else []
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        bgv, png = Path(tmp) / "x.bgv", Path(tmp) / "x.png"
        commands = {
            "encode": [sys.executable, "-m", "bgcodec", "encode", str(path), "-l", str(lmbda), "-o", str(bgv),
                       "--force", "--quiet", *extra],
            "decode": [sys.executable, "-m", "bgcodec", "decode", str(bgv), "-o", str(png), "--force", "--quiet",
                       *extra],
            "decode --synthesis shallow": [sys.executable, "-m", "bgcodec", "decode", str(bgv), "-o", str(png),
                                           "--force", "--quiet", "--synthesis", "shallow", *extra],
        }
        print(f"\nwhole CLI process for {path.name}, median of {repeat} after 1 warm-up:\n")
        print("| command | s |")
        print("|---|---:|")
        for name, cmd in commands.items():
            t, _ = median_time(lambda: subprocess.run(cmd, check=True, cwd=REPO, env=env), repeat)
            print(f"| bgcodec {name} | {t:.3f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="weights file or random:CONFIG[:SEED] (default: bgcodec's)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help=f"image folder (default {DEFAULT_IMAGES})")
    parser.add_argument("--lambda", dest="lmbda", type=float, default=0.01, help="λ, CompressAI convention")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--breakdown", action="store_true", help="time split for the first image")
    parser.add_argument("--cli", action="store_true", help="whole-process CLI times for the first image")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
        if args.images.is_dir() else []
    if args.limit is not None:
        paths = paths[: args.limit]
    if not paths:
        parser.error(f"no images found in {args.images}")

    codec = Codec.load(args.weights, "cpu")
    weights_name = resolve(args.weights)
    print(f"weights: {weights_name} (model {codec.identity.hex()}), λ = {args.lmbda:g}, "
          f"median of {args.repeat} after 1 warm-up\n")
    print("| image | size | bpp | encode s | decode s (full) | decode s (shallow) |")
    print("|---|---|---:|---:|---:|---:|")
    results = []
    for path in paths:
        image = load_rgb(path)
        h, w = image.shape[:2]
        t_enc, data = median_time(lambda: codec.encode(image, args.lmbda), args.repeat)
        t_dec, decoded = median_time(lambda: codec.decode(data, path.name), args.repeat)
        t_shallow, _ = median_time(lambda: codec.decode(data, path.name, synthesis="shallow"), args.repeat)
        assert decoded.shape == image.shape
        bpp = 8 * len(data) / (h * w)
        results.append((bpp, t_enc, t_dec, t_shallow))
        print(f"| {path.name} | {w}×{h} | {bpp:.4f} | {t_enc:.3f} | {t_dec:.3f} | {t_shallow:.3f} |", flush=True)

    mean = [statistics.fmean(col) for col in zip(*results)]
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    # On a machine shared with other jobs, OpenMP's busy-waiting thread pool can make the
    # default thread count many times slower; say how it was set.
    print(f"\nmean over {len(results)} images: {mean[0]:.4f} bpp, encode {mean[1]:.3f} s, decode {mean[2]:.3f} s "
          f"(shallow synthesis: {mean[3]:.3f} s); "
          f"{torch.get_num_threads()} thread(s) on {cpu_model()} ({os.cpu_count()} logical CPUs{load}), "
          f"torch {torch.__version__}")
    if args.cli:
        print_cli_times(paths[0], args.weights, args.lmbda, args.repeat)

    if args.breakdown:
        path = paths[0]
        image = load_rgb(path)
        rows = breakdown(codec, image, args.lmbda, args.repeat)
        print(f"\nbreakdown for {path.name} ({image.shape[1]}×{image.shape[0]}), median of {args.repeat}:\n")
        print("| step | s | share |")
        print("|---|---:|---:|")
        for side in ("encode", "decode"):
            total = sum(t for name, t in rows if name.startswith(side))
            for name, t in rows:
                if name.startswith(side):
                    print(f"| {name} | {t:.4f} | {100 * t / total:.1f} % |")
            print(f"| **{side} total** | {total:.4f} | |")
        for name, t in rows:
            if name.startswith("("):
                print(f"| {name} | {t:.4f} | |")
        emb_time = next(t for name, t in rows if name.startswith("λ embedding"))
        print(f"\n(λ embedding: {emb_time * 1e3:.2f} ms per call, included in the rows above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
