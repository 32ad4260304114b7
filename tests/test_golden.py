"""Golden files: the shipped weights encode docs/sample.png to the bytes under
tests/expected/, and those files decode to the pixels recorded there.

Any change that alters what existing files decode to, or what the encoder writes, fails
here. When such a change is intended (new weights, a new format version), regenerate with
``BGCODEC_REGENERATE_GOLDEN=1 python -m pytest tests/test_golden.py`` and say in the commit
why existing files change.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bgcodec.codec import Codec

REPO = Path(__file__).resolve().parents[1]
EXPECTED = REPO / "tests" / "expected"
MANIFEST = EXPECTED / "golden.json"
SAMPLE = REPO / "docs" / "sample.png"
CASES = [(lmbda, synthesis) for lmbda in (0.004, 0.05) for synthesis in ("full", "shallow")]
REGENERATE = os.environ.get("BGCODEC_REGENERATE_GOLDEN") == "1"


def case_name(lmbda: float, synthesis: str) -> str:
    return f"sample-l{lmbda:g}-{synthesis}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def codec():
    return Codec.load(None, "cpu")


@pytest.fixture(scope="module")
def manifest(codec):
    if REGENERATE:
        image = np.asarray(Image.open(SAMPLE).convert("RGB"))
        entries = {}
        for lmbda, synthesis in CASES:
            data = codec.encode(image, lmbda, synthesis=synthesis)
            (EXPECTED / f"{case_name(lmbda, synthesis)}.bgv").write_bytes(data)
            entries[case_name(lmbda, synthesis)] = {"bytes_sha256": sha256(data),
                                                   "pixels_sha256": sha256(codec.decode(data).tobytes())}
        MANIFEST.write_text(json.dumps({"model_id": codec.identity.hex(), "files": entries}, indent=2) + "\n")
    return json.loads(MANIFEST.read_text())


def test_the_golden_files_are_for_the_shipped_weights(codec, manifest):
    assert manifest["model_id"] == codec.identity.hex(), "the shipped weights changed: regenerate the golden files"
    assert sorted(manifest["files"]) == sorted(case_name(*case) for case in CASES)


@pytest.mark.parametrize("lmbda,synthesis", CASES)
def test_encoder_writes_the_golden_bytes(codec, manifest, lmbda, synthesis):
    image = np.asarray(Image.open(SAMPLE).convert("RGB"))
    data = codec.encode(image, lmbda, synthesis=synthesis)
    name = case_name(lmbda, synthesis)
    assert sha256(data) == manifest["files"][name]["bytes_sha256"], f"{name}: the encoder writes other bytes"
    assert data == (EXPECTED / f"{name}.bgv").read_bytes()


@pytest.mark.parametrize("lmbda,synthesis", CASES)
def test_golden_file_decodes_to_the_golden_pixels(codec, manifest, lmbda, synthesis):
    name = case_name(lmbda, synthesis)
    pixels = codec.decode((EXPECTED / f"{name}.bgv").read_bytes(), name)
    assert pixels.shape == (256, 384, 3)
    assert sha256(pixels.tobytes()) == manifest["files"][name]["pixels_sha256"], f"{name} decodes to other pixels"
