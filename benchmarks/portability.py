"""Do .bgv files decode, to the same pixels, when the decoder takes other CPU kernels?

Encodes every image of a folder at each λ in one process under one configuration
(``--encoder``), then decodes all the files in a fresh process under each configuration
and compares the pixels with those of the first configuration's decode. A configuration is
a set of environment variables that make torch take the code paths another computer would
take (no AVX2 in ATen, oneDNN without AVX, MKL without AVX) or another thread count.
Prints files × configurations: decode failures and files whose pixels differ. With
``--drift`` it also records the prior's ln σ of every scale the decoder computes and prints
the largest difference from the first configuration's, to set against
``bgcodec.entropy.PIN_MARGIN``.

    python benchmarks/portability.py KODAK
    python benchmarks/portability.py KODAK --encoder all-three --lambdas 0.01
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bgcodec import container  # noqa: E402
from bgcodec.eval.system import KERNEL_CONFIGURATIONS, kernel_environment  # noqa: E402

DEFAULT_LAMBDAS = "0.002,0.01,0.05"
IMAGE_SUFFIXES = {".png", ".ppm", ".bmp", ".tif", ".tiff"}


def bgcodec(args: list[str], configuration: str) -> subprocess.CompletedProcess:
    """Run ``python -m bgcodec ARGS`` from this checkout in a fresh process."""
    return bgcodec_process(["-m", "bgcodec", *args], configuration)


def bgcodec_process(args: list[str], configuration: str) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` with this checkout importable, under ``configuration``."""
    env = kernel_environment(configuration)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)


DRIFT_PROBE = """
import sys
from pathlib import Path
import numpy as np
from bgcodec import entropy
from bgcodec.codec import Codec
seen = []
scale_indices = entropy.scale_indices
def spy(log_sigma):
    seen.append(np.array(log_sigma, dtype=np.float64).reshape(-1))
    return scale_indices(log_sigma)
entropy.scale_indices = spy
codec = Codec.load(sys.argv[1] or None, "cpu")
out = Path(sys.argv[2])
for name in sys.argv[3:]:
    seen.clear()
    codec.decode(Path(name).read_bytes(), name)
    np.save(out / (Path(name).stem + ".npy"), np.concatenate(seen))
"""


def drift(files: list[Path], out: Path, configuration: str, weights: str | None) -> None:
    """Save the decoder's ln σ of each file under ``out`` (a fresh process under ``configuration``)."""
    out.mkdir()
    proc = bgcodec_process(["-c", DRIFT_PROBE, weights or "", str(out), *map(str, files)], configuration)
    if proc.returncode:
        sys.exit(f"drift probe under {configuration} failed: {proc.stderr.strip()}")


def pixel_digest(path: Path) -> str:
    with Image.open(path) as im:
        return hashlib.sha256(np.asarray(im.convert("RGB")).tobytes()).hexdigest()


def encode_all(images: list[Path], lambdas: list[float], encoder: str, weights: list[str], root: Path) -> list[Path]:
    """Every image at every λ, encoded in one process under ``encoder``; files named λ-stem.bgv."""
    files = []
    for lmbda in lambdas:
        out = root / f"enc-{lmbda:g}"
        out.mkdir()
        proc = bgcodec(["encode", *map(str, images), "-l", str(lmbda), "-o", f"{out}/", "--quiet", *weights], encoder)
        if proc.returncode:
            sys.exit(f"encoding at λ={lmbda:g} failed: {proc.stderr.strip()}")
        files += [f.rename(root / f"{lmbda:g}-{f.name}") for f in sorted(out.glob("*.bgv"))]
    return files


def decode_all(files: list[Path], decoder: str, weights: list[str], out: Path,
               reference: dict[str, str]) -> tuple[int, int]:
    """Decode ``files`` in one process under ``decoder``: (failures, files whose pixels differ
    from ``reference``, which the first decoder fills)."""
    out.mkdir()
    bgcodec(["decode", *map(str, files), "-o", f"{out}/", "--quiet", *weights], decoder)
    failures = differ = 0
    for f in files:
        decoded = out / f.with_suffix(".png").name
        if not decoded.exists():
            failures += 1
            continue
        digest = pixel_digest(decoded)
        differ += digest != reference.setdefault(f.name, digest)
        decoded.unlink()
    return failures, differ


def max_drift(files: list[Path], first: Path, other: Path) -> float:
    return max(float(np.abs(np.load(first / f"{f.stem}.npy") - np.load(other / f"{f.stem}.npy")).max())
               for f in files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", type=Path, help="folder of images")
    parser.add_argument("--lambdas", default=DEFAULT_LAMBDAS,
                        help=f"λ list, CLI convention (default {DEFAULT_LAMBDAS})")
    parser.add_argument("--encoder", default="native", choices=KERNEL_CONFIGURATIONS,
                        help="configuration of the encoder")
    parser.add_argument("--decoders", default=",".join(KERNEL_CONFIGURATIONS),
                        help="comma-separated decoder configurations (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--weights", default=None, help="weights file (default: bgcodec's)")
    parser.add_argument("--drift", action="store_true", help="also measure how far each decoder's ln σ moves")
    args = parser.parse_args(argv)

    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: args.limit]
    lambdas = [float(v) for v in args.lambdas.split(",")]
    decoders = args.decoders.split(",")
    weights = ["--weights", args.weights] if args.weights else []
    with tempfile.TemporaryDirectory(prefix="bgcodec-portability-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        files = encode_all(images, lambdas, args.encoder, weights, root)
        pins = sum(len(container.unpack(f.read_bytes(), f.name)[0].pins) for f in files)
        print(f"encoded {len(files)} files ({len(images)} images × {len(lambdas)} λ) under {args.encoder} "
              f"in {time.perf_counter() - t0:.0f} s; {pins} pinned scales in all", flush=True)
        reference: dict[str, str] = {}
        rows = []
        for decoder in decoders:
            t0 = time.perf_counter()
            failures, differ = decode_all(files, decoder, weights, root / f"dec-{decoder}", reference)
            drift_seen = None
            if args.drift:
                drift(files, root / f"drift-{decoder}", decoder, args.weights)
                drift_seen = max_drift(files, root / f"drift-{decoders[0]}", root / f"drift-{decoder}")
            rows.append((decoder, failures, differ, time.perf_counter() - t0, drift_seen))
            print(f"  {decoder}: {failures} failures, {differ} differ", file=sys.stderr, flush=True)

    print(f"\nencoder: {args.encoder}; {len(files)} files; pixels compared with the first decoder's "
          f"({decoders[0]})\n")
    drift_column = " max ln σ drift |" if args.drift else ""
    print(f"| decoder | environment | failures | pixels differ | s |{drift_column}")
    print("|---|---|---:|---:|---:|" + ("---:|" if args.drift else ""))
    for decoder, failures, differ, seconds, drift_seen in rows:
        env = " ".join(f"{k}={v}" for k, v in KERNEL_CONFIGURATIONS[decoder].items()) or "(none)"
        extra = f" {drift_seen:.2e} |" if args.drift else ""
        print(f"| {decoder} | {env} | {failures} / {len(files)} | {differ} | {seconds:.0f} |{extra}")
    total = sum(r[1] for r in rows)
    print(f"\ntotal: {total} failures, {sum(r[2] for r in rows)} files with other pixels")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
