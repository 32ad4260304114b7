"""Training on a lent machine: the archive of training images, the time-limited run and the
float16 weights it leaves behind."""

import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from bgcodec.train.data import load_training_image
from bgcodec.train.loop import steps_that_fit, train
from bgcodec.train.options import TrainOptions
from bgcodec.train.pack import MANIFEST, MANIFEST_RESERVE, pack
from bgcodec.train.remote import EXPORTED, main as remote_main
from bgcodec.weights import load_model


def test_steps_that_fit_lower_the_total_to_the_time_left_and_never_raise_it():
    assert steps_that_fit(100, 10_000, steps_per_s=2.0, seconds_left=60) == 220
    assert steps_that_fit(100, 150, steps_per_s=2.0, seconds_left=60) == 150
    assert steps_that_fit(100, 10_000, steps_per_s=2.0, seconds_left=-5) == 100


def test_a_time_limited_run_ends_its_schedule_in_time(image_dir, tmp_path):
    opts = TrainOptions(data=[str(image_dir)], out=str(tmp_path / "run"), config="tiny", steps=100_000,
                        batch_size=1, crop=64, warmup_steps=1, log_every=1, threads=1, minutes=0.05)
    started = time.time()
    train(opts, log=lambda s: None)
    assert time.time() - started < 60
    assert 1 <= opts.steps < 100_000  # lowered to what fitted, and the run reached it
    assert f'"steps": {opts.steps}' in load_model(str(tmp_path / "run" / "ema.safetensors")).metadata["training"]


def _stored_images(archive):
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())
        images = {entry["source"]: np.asarray(Image.open(io.BytesIO(tar.extractfile(entry["file"]).read())))
                  for entry in manifest["images"]}
    return manifest, images


def test_the_archive_holds_what_the_trainer_reads_losslessly_within_the_budget(image_dir, tmp_path):
    archive = tmp_path / "data.tar"
    summary = pack([str(image_dir)], archive, budget_bytes=10**6, max_side=48, downscale_jpeg=True, seed=1,
                   log=lambda s: None)
    manifest, images = _stored_images(archive)
    assert summary.kept == summary.offered == {str(image_dir): 4} and archive.stat().st_size == summary.bytes
    assert manifest["downscale_jpeg_applied"] is True
    for source, stored in images.items():
        read = load_training_image(Path(source), downscale_jpeg=True)
        assert stored.shape[0] == min(48, read.shape[0]) and stored.shape[1] == min(48, read.shape[1])
        rows, cols = stored.shape[:2]
        assert any(np.array_equal(read[t:t + rows, l:l + cols], stored)  # a window, pixel for pixel
                   for t in range(read.shape[0] - rows + 1) for l in range(read.shape[1] - cols + 1))


def test_the_archive_stops_at_the_budget_with_each_folder_in_the_same_share(tmp_path):
    rng = np.random.default_rng(0)
    folders = {"two": 2, "six": 6}
    for name, count in folders.items():
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    one_image = 512 + 4096  # a tar header and a noise image, which hardly compresses (3 072 bytes raw)
    budget = MANIFEST_RESERVE + 4 * one_image + 100
    archive = tmp_path / "data.tar"
    summary = pack([str(tmp_path / name) for name in folders], archive, budget_bytes=budget, log=lambda s: None)
    kept = {Path(folder).name: count for folder, count in summary.kept.items()}
    assert kept == {"two": 1, "six": 3} and archive.stat().st_size <= budget


@pytest.mark.slow
def test_a_remote_run_trains_on_the_archive_and_leaves_float16_weights(image_dir, tmp_path):
    archive = tmp_path / "data.tar"
    pack([str(image_dir)], archive, budget_bytes=10**6, val_dir=str(image_dir), log=lambda s: None)
    out = tmp_path / "out"
    remote_main([str(archive), "--minutes", "0.05", "--out", str(out), "--", "--config", "tiny", "--device", "cpu",
                 "--batch-size", "1", "--crop", "64", "--warmup-steps", "1", "--log-every", "1", "--threads", "1",
                 "--val-images", "1", "--val-lambdas", "0.01"])
    loaded = load_model(str(out / EXPORTED))
    with safe_open(str(out / EXPORTED), "pt") as f:
        stored = [f.get_tensor(k) for k in f.keys()]
    assert all(t.dtype.itemsize == 2 for t in stored if t.is_floating_point())
    assert "images" in json.loads(loaded.metadata["training"])["data"][0]
    assert (out / "log.csv").read_text().count("\n") >= 2
    assert (out / "val.csv").read_text().count("\n") == 2  # the header and the last step's point
