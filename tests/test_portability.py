"""A .bgv file decodes to the same pixels whatever CPU kernels and thread count the decoder
takes, and the encoder writes the same bytes under any of them (docs/DESIGN.md, portable
bitstreams).

Fresh interpreters run under the environment variables of
``bgcodec.eval.system.KERNEL_CONFIGURATIONS`` (no AVX2 in ATen, oneDNN and MKL without AVX, 1 and
2 threads), with the shipped weights on a few small images, and with those weights in the
``small-checkerboard`` layout under a random context convolution (its second halves then
depend on the first) and in the ``small-dc-free`` layout with random zero-sum filters
(float64 shifted sums with edge padding in the top-down path). Each one encodes the images
and decodes the files that the unmodified (native) process wrote.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bgcodec.eval.system import KERNEL_CONFIGURATIONS, kernel_environment

pytestmark = pytest.mark.slow  # every test here starts fresh interpreters

REPO = Path(__file__).resolve().parents[1]
LAMBDAS = (0.004, 0.05)  # CLI convention
TIMEOUT = 300

# Stride-64 grids of 2×3 and 2×4 cells: shapes at which MKL's float32 GEMM once rounded
# differently with 1 and 2 threads.
SIZES = [(96, 160), (120, 250)]

ROUND_TRIP = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np
    from bgcodec.codec import Codec
    images, theirs, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    codec = Codec.load(None, "cpu")
    for path in sorted(images.glob("*.npy")):
        for lmbda in map(float, sys.argv[4:]):
            name = f"{path.stem}-{lmbda:g}"
            (out / f"{name}.bgv").write_bytes(codec.encode(np.load(path), lmbda))
            their_file = theirs / f"{name}.bgv"
            if their_file.exists():
                np.save(out / f"{name}.npy", codec.decode(their_file.read_bytes(), their_file.name))
""")


def synthetic_photo(h: int, w: int, seed: int = 2024) -> np.ndarray:
    """A deterministic photo-like image: smooth gradients, a few hard edges, mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    y, x = y / h, x / w
    img = np.stack([0.35 + 0.3 * y, 0.55 + 0.25 * y, 0.85 - 0.2 * y], -1) * (0.9 + 0.1 * np.cos(3 * x + 1))[..., None]
    hill = y > 0.6 + 0.15 * np.sin(5 * x)
    img[hill] = np.stack([0.25 + 0.2 * x, 0.45 + 0.1 * y, 0.15 + 0.05 * x], -1)[hill]
    img[(x - 0.7) ** 2 + (y - 0.3) ** 2 < 0.015] = [0.1, 0.08, 0.05]
    img[np.abs((x - 0.25) - 0.4 * (y - 0.5)) < 0.03] = [0.95, 0.9, 0.7]
    img = img + (0.04 * np.sin(40 * x + 25 * y) * hill)[..., None] + rng.normal(0, 0.015, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def round_trip(configuration: str, weights: str, images: Path, theirs: Path, out: Path) -> Path:
    """Encode ``images`` and decode the files in ``theirs`` in a fresh process with ``weights``;
    results in ``out``."""
    out.mkdir()
    env = kernel_environment(configuration)
    env["PYTHONPATH"] = str(REPO)
    env["BGCODEC_WEIGHTS"] = weights
    # Keep 2-thread processes from busy-waiting on a machine shared with other jobs;
    # the thread count, and so any reduction order, is unchanged.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    proc = subprocess.run([sys.executable, "-c", ROUND_TRIP, str(images), str(theirs), str(out), *map(str, LAMBDAS)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{configuration}: {proc.stderr.strip()}"
    return out


def checkerboard_weights(path: Path) -> str:
    import torch

    from bgcodec.config import CONFIGS
    from bgcodec.model import BGVAE
    from bgcodec.weights import load_model, save_model

    model = BGVAE(CONFIGS["small-checkerboard"])
    model.load_state_dict(load_model(None).model.state_dict(), strict=False)
    with torch.no_grad():
        for latent in model.stages[3].latents:
            latent.context.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(3))
    save_model(model, path)
    return str(path)


def dc_free_weights(path: Path) -> str:
    import torch

    from bgcodec.config import CONFIGS, resolve
    from bgcodec.model import BGVAE
    from bgcodec.train.checkpoints import init_from
    from bgcodec.weights import save_model

    model = BGVAE(CONFIGS["small-dc-free"])
    init_from(model, resolve("bgvae-small.safetensors"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("detail.1.weight") or name == "synthesis.head.pattern.1.weight":
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(4))
    save_model(model, path)
    return str(path)


WEIGHTS = {"shipped": lambda root: "bgvae-small.safetensors",
           "checkerboard": lambda root: checkerboard_weights(root / "board.safetensors"),
           "dc-free": lambda root: dc_free_weights(root / "dc-free.safetensors")}


@pytest.fixture(scope="module", params=list(WEIGHTS))
def native(request, tmp_path_factory):
    """The weights, the images, and the files the native process wrote (and decoded itself)."""
    root = tmp_path_factory.mktemp("portability")
    weights = WEIGHTS[request.param](root)
    images = root / "images"
    images.mkdir()
    for h, w in SIZES:
        np.save(images / f"photo-{h}x{w}.npy", synthetic_photo(h, w))
    return weights, images, round_trip("native", weights, images, root / "native", root / "native")


@pytest.fixture(scope="module", params=[c for c in KERNEL_CONFIGURATIONS if c != "native"])
def other(request, native, tmp_path_factory):
    weights, images, files = native
    return request.param, files, round_trip(request.param, weights, images, files,
                                            tmp_path_factory.mktemp("p") / request.param)


def test_the_files_are_not_trivial(native):
    _, _, files = native
    sizes = [f.stat().st_size for f in files.glob("*.bgv")]
    assert len(sizes) == len(SIZES) * len(LAMBDAS) and min(sizes) > 100


def test_decodes_to_the_same_pixels(other):
    configuration, files, out = other
    for decoded in sorted(files.glob("*.npy")):
        theirs = out / decoded.name
        assert theirs.exists(), f"{configuration} did not decode {decoded.stem}"
        same = np.load(theirs) == np.load(decoded)
        assert same.all(), f"{configuration}: {decoded.stem} decodes to {np.count_nonzero(~same)} other values"


def test_encodes_to_the_same_bytes(other):
    configuration, files, out = other
    for native_file in sorted(files.glob("*.bgv")):
        assert (out / native_file.name).read_bytes() == native_file.read_bytes(), \
            f"{configuration} encodes {native_file.stem} to other bytes"


def test_a_file_written_under_other_kernels_decodes_natively(native, tmp_path):
    weights, images, files = native
    switched = round_trip("all-three", weights, images, files, tmp_path / "all-three")
    back = round_trip("native", weights, images, switched, tmp_path / "back")
    for decoded in sorted(files.glob("*.npy")):
        assert np.array_equal(np.load(back / decoded.name), np.load(decoded)), decoded.stem
