"""The bgcodec command line, end to end with the real (default, random-init) model.

Subprocesses (each one that runs the model imports torch, ~2-3 s) are kept to a
few; everything else goes through click's CliRunner in this process, sharing
one loaded Codec.
"""

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import bgcodec
from bgcodec.cli import cli
from bgcodec.lambdas import quality_to_lambda

REPO = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    # The test images are tiny: one thread is fastest, and several threads on a busy
    # 2-core machine slow torch down by 10-50x (OpenMP oversubscription).
    "OMP_NUM_THREADS": "1",
}


def bgcodec_process(*args, stdin: bytes | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bgcodec", *map(str, args)],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        env=ENV,
        cwd=cwd,
        timeout=300,
    )


def write_png(path: Path, height: int = 16, width: int = 16, seed: int = 0, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    Image.fromarray(rng.integers(0, 256, (height, width, channels), dtype=np.uint8)).save(path)
    return path


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("bgcodec: error:")]


def listing(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


# -- shared model -------------------------------------------------------------


@pytest.fixture(scope="module")
def codec():
    import torch

    from bgcodec.codec import Codec

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see OMP_NUM_THREADS above
    yield Codec.load(None, device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def reuse_codec(codec):
    """Make every in-process CLI run reuse the module's Codec instead of loading it again."""
    from bgcodec.codec import Codec

    original = Codec.load.__func__

    def load(cls, weights=None, device="auto"):
        if weights is None and device in ("auto", "cpu"):
            return codec
        return original(cls, weights, device)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Codec, "load", classmethod(load))
        yield


@pytest.fixture(scope="module")
def lam(codec) -> str:
    """A λ inside the model's range, as a command-line string."""
    return repr(quality_to_lambda(50, codec.lambda_range))


@pytest.fixture(scope="module")
def bgv(codec, lam, tmp_path_factory) -> Path:
    """A valid 48x40 .bgv file."""
    path = tmp_path_factory.mktemp("bgv") / "img.bgv"
    image = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    path.write_bytes(codec.encode(image, float(lam)))
    return path


@pytest.fixture
def runner():
    return CliRunner()


def run(runner, *args, stdin: bytes | None = None):
    return runner.invoke(cli, [str(a) for a in args], input=stdin, catch_exceptions=False)


# -- real processes -------------------------------------------------------------


@pytest.mark.slow
def test_pipe_through_stdin_and_stdout(tmp_path, lam):
    png = write_png(tmp_path / "a.png", 40, 48).read_bytes()
    encoded = bgcodec_process("encode", "-", "-l", lam, "-o", "-", stdin=png)
    assert encoded.returncode == 0, encoded.stderr.decode()
    assert encoded.stdout[:4] != b"\x89PNG" and len(encoded.stdout) > 20
    assert b"Traceback" not in encoded.stderr
    # stdin with no -o also goes to stdout
    decoded = bgcodec_process("decode", "-", stdin=encoded.stdout)
    assert decoded.returncode == 0, decoded.stderr.decode()
    with Image.open(io.BytesIO(decoded.stdout)) as img:
        assert img.format == "PNG" and img.mode == "RGB" and img.size == (48, 40)
    assert listing(tmp_path) == {"a.png"}


@pytest.mark.slow
def test_a_parallel_batch_writes_the_same_files_and_the_same_errors(tmp_path, lam):
    for seed in range(3):
        write_png(tmp_path / f"in{seed}.png", 24, 40, seed=seed)
    (tmp_path / "broken.png").write_bytes(b"this is not a png")
    inputs = ["in0.png", "broken.png", "in1.png", "in2.png"]
    results = {j: bgcodec_process("encode", *inputs, "-l", lam, "-o", f"out{j}/", "-j", str(j), cwd=tmp_path)
               for j in (1, 2)}
    for j, result in results.items():
        assert result.returncode == 1, result.stderr.decode()
        assert error_lines(result.stderr.decode()) == ["bgcodec: error: broken.png: not an image (cannot identify "
                                                       "image file)"]
        assert "encoded 3 of 4 inputs (1 failed)" in result.stderr.decode()
    for name in ("in0.bgv", "in1.bgv", "in2.bgv"):
        assert (tmp_path / "out1" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes()
    result = bgcodec_process("decode", "out2/in0.bgv", "out2/in1.bgv", "-o", "dec/", "-j", "2", cwd=tmp_path)
    assert result.returncode == 0 and listing(tmp_path / "dec") == {"in0.png", "in1.png"}


@pytest.mark.slow
def test_the_tiles_of_a_single_input_go_to_parallel_workers(tmp_path, lam):
    from bgcodec.config import TILE_SIZE

    write_png(tmp_path / "wide.png", 24, TILE_SIZE + 76, seed=4)
    for j in (1, 2):
        result = bgcodec_process("encode", "wide.png", "-l", lam, "-o", f"wide{j}.bgv", "-j", str(j), cwd=tmp_path)
        assert result.returncode == 0, result.stderr.decode()
    assert (tmp_path / "wide1.bgv").read_bytes() == (tmp_path / "wide2.bgv").read_bytes()
    for j in (1, 2):
        result = bgcodec_process("decode", "wide1.bgv", "-o", f"wide{j}.png", "-j", str(j), cwd=tmp_path)
        assert result.returncode == 0, result.stderr.decode()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "wide1.png")), np.asarray(Image.open(tmp_path / "wide2.png")))
    (tmp_path / "cut.bgv").write_bytes((tmp_path / "wide1.bgv").read_bytes()[:-40])
    result = bgcodec_process("decode", "cut.bgv", "-o", "cut.png", "-j", "2", cwd=tmp_path)
    assert result.returncode == 1 and len(error_lines(result.stderr.decode())) == 1
    assert b"Traceback" not in result.stderr and not (tmp_path / "cut.png").exists()


@pytest.mark.parametrize("jobs, threads", [(1, 1), (2, 2), (None, 2), (4, 2)])
def test_jobs_is_the_cores_a_single_input_codes_on(monkeypatch, jobs, threads):
    import torch

    from bgcodec.cli import batch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("bgcodec.resources.idle_cores", lambda: 2)
    monkeypatch.setattr(batch, "_cores", jobs)
    before = torch.get_num_threads()
    try:
        batch.CodecHolder("random:tiny", "cpu").get()
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


def _worker_view(holder):
    import torch

    return holder._codec is not None, torch.get_num_threads()


def test_forked_workers_share_the_codec_loaded_before_the_fork(monkeypatch):
    import torch

    from bgcodec.cli import batch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("bgcodec.resources.idle_cores", lambda: 4)
    monkeypatch.setattr(batch, "_workers", 1)
    before = torch.get_num_threads()
    try:
        holder = batch.CodecHolder("random:tiny", "cpu")
        threads = holder.load_for_workers(2)
        assert threads == 2 and torch.get_num_threads() == 1  # loaded on one thread, each worker takes two
        with batch._worker_pool(2, True, threads) as pool:
            assert pool.submit(_worker_view, holder).result() == (True, 2)
    finally:
        torch.set_num_threads(before)


def _tile_worker_view(codec, task):
    import torch

    return task, codec.identity, torch.get_num_threads()


def _no_second_load(holder, threads=None):
    raise AssertionError("a forked tile worker loaded the model again")


def test_the_tile_workers_of_a_large_input_are_forked_with_the_codec_loaded_before(monkeypatch):
    import torch

    from bgcodec.cli import batch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("bgcodec.resources.idle_cores", lambda: 4)
    monkeypatch.setattr(batch, "_can_fork", lambda: True)  # as in a fresh process, where torch is not imported yet
    monkeypatch.setattr(batch, "_cores", 4)
    monkeypatch.setattr(batch, "_workers", 1)
    before = torch.get_num_threads()
    holder = batch.CodecHolder("random:tiny", "cpu")
    holder.tile_workers = 2
    try:
        assert holder.tile_runner(1) is None and holder._codec is None  # one tile: coded here, nothing loaded yet
        runner = holder.tile_runner(3)
        assert holder._codec is not None and torch.get_num_threads() == 1  # loaded here on one thread
        monkeypatch.setattr(batch.CodecHolder, "_load", _no_second_load)
        assert list(runner(_tile_worker_view, [0, 1, 2])) == [(t, holder._codec.identity, 2) for t in range(3)]
    finally:
        holder.close()
        torch.set_num_threads(before)


@pytest.mark.slow
def test_batch_with_a_bad_input_in_a_process(tmp_path, lam):
    write_png(tmp_path / "one.png", 16, 16, seed=1)
    write_png(tmp_path / "two.png", 24, 32, seed=2)
    (tmp_path / "broken.png").write_bytes(b"this is not a png")
    out = tmp_path / "out"
    result = bgcodec_process(
        "encode", "one.png", "broken.png", "two.png", "-l", lam, "-o", "out/", cwd=tmp_path
    )
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert listing(out) == {"one.bgv", "two.bgv"}
    assert error_lines(stderr) == ["bgcodec: error: broken.png: not an image (cannot identify image file)"]
    assert "Traceback" not in stderr
    assert result.stdout == b""
    # and back, in the same directory, to PNGs of the right sizes
    result = bgcodec_process("decode", "out/one.bgv", "out/two.bgv", "-o", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert Image.open(out / "one.png").size == (16, 16)
    assert Image.open(out / "two.png").size == (32, 24)
    assert result.stdout == b""


def test_python_m_help():
    result = bgcodec_process("--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    assert "Usage: bgcodec" in text and "encode" in text and "decode" in text and "info" in text
    assert "Exit status" in text


def test_encode_help_states_the_effort_iterations():
    from bgcodec.config import EFFORT_ITERATIONS

    text = " ".join(CliRunner().invoke(cli, ["encode", "--help"]).output.split())
    levels = ", ".join(str(EFFORT_ITERATIONS[effort]) for effort in (1, 2, 3))
    assert f"1, 2, 3 = {levels} iterations" in text


def test_help_and_info_do_not_import_torch(bgv):
    script = textwrap.dedent(
        """
        import json, sys
        from click.testing import CliRunner
        from bgcodec.cli import cli
        runner = CliRunner()
        calls = [["--help"], ["encode", "--help"], ["decode", "--help"], ["info", "--help"],
                 ["--version"], ["info", sys.argv[1]], ["info", "--json", sys.argv[1]]]
        codes = [runner.invoke(cli, call).exit_code for call in calls]
        import bgcodec
        print(json.dumps({"codes": codes, "torch": "torch" in sys.modules}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(bgv)], capture_output=True, env=ENV, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report == {"codes": [0] * 7, "torch": False}


def test_importing_bgcodec_does_not_import_torch():
    result = subprocess.run(
        [sys.executable, "-c", "import sys, bgcodec, bgcodec.cli; print('torch' in sys.modules)"],
        capture_output=True, env=ENV, timeout=120,
    )
    assert result.stdout.strip() == b"False", result.stderr.decode()


# -- encode / decode in process -------------------------------------------------


def test_round_trip_with_explicit_outputs(runner, tmp_path, lam):
    src = write_png(tmp_path / "img.png", 40, 48)
    result = run(runner, "encode", src, "-l", lam, "-o", tmp_path / "img.bgv")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    result = run(runner, "decode", tmp_path / "img.bgv", "-o", tmp_path / "back.png")
    assert result.exit_code == 0, result.stderr
    with Image.open(tmp_path / "back.png") as img:
        assert img.format == "PNG" and img.size == (48, 40)
    assert listing(tmp_path) == {"img.png", "img.bgv", "back.png"}


@pytest.mark.slow
def test_shallow_synthesis_and_effort(runner, tmp_path, lam):
    src = write_png(tmp_path / "img.png", 40, 48)
    result = run(runner, "encode", src, "-l", lam, "--synthesis", "shallow", "-e", "1", "-o", tmp_path / "img.bgv")
    assert result.exit_code == 0, result.stderr
    result = run(runner, "info", "--json", tmp_path / "img.bgv")
    assert json.loads(result.stdout)["synthesis"] == "shallow"
    for synthesis in ("file", "full", "shallow"):
        result = run(runner, "decode", tmp_path / "img.bgv", "--synthesis", synthesis, "-o", tmp_path / f"{synthesis}.png")
        assert result.exit_code == 0, result.stderr
    pixels = {name: np.asarray(Image.open(tmp_path / f"{name}.png")) for name in ("file", "full", "shallow")}
    assert np.array_equal(pixels["file"], pixels["shallow"])
    assert not np.array_equal(pixels["full"], pixels["shallow"])


def test_default_output_names_and_quality(runner, tmp_path, codec):
    src = write_png(tmp_path / "photo.png")
    result = run(runner, "encode", src)  # quality 75 by default
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "photo.bgv").exists()
    info = json.loads(run(runner, "info", "--json", tmp_path / "photo.bgv").stdout)
    assert info["lambda_cli"] == pytest.approx(quality_to_lambda(75, codec.lambda_range), rel=1e-5)
    (tmp_path / "photo.png").unlink()
    result = run(runner, "decode", tmp_path / "photo.bgv")
    assert result.exit_code == 0, result.stderr
    assert Image.open(tmp_path / "photo.png").size == (16, 16)


def test_quality_one_is_the_smallest_lambda(runner, tmp_path, codec):
    src = write_png(tmp_path / "q.png")
    assert run(runner, "encode", src, "-q", 1).exit_code == 0
    info = json.loads(run(runner, "info", "--json", tmp_path / "q.bgv").stdout)
    assert info["lambda_cli"] == pytest.approx(codec.lambda_range[0], rel=1e-5)


def test_decode_to_other_formats_by_extension(runner, tmp_path, bgv):
    for name, fmt in [("x.webp", "WEBP"), ("x.jpg", "JPEG"), ("x.tiff", "TIFF"), ("x.bmp", "BMP")]:
        result = run(runner, "decode", bgv, "-o", tmp_path / name, "--quiet")
        assert result.exit_code == 0, result.stderr
        assert result.stderr == ""
        with Image.open(tmp_path / name) as img:
            assert img.format == fmt and img.size == (48, 40)


def test_decode_to_unknown_extension_fails_without_output(runner, tmp_path, bgv):
    result = run(runner, "decode", bgv, "-o", tmp_path / "x.xyz")
    assert result.exit_code == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"bgcodec: error: {tmp_path / 'x.xyz'}: unknown output image format")
    assert listing(tmp_path) == set()


def test_existing_output_is_kept_without_force_and_replaced_with_it(runner, tmp_path, lam):
    src = write_png(tmp_path / "a.png")
    dest = tmp_path / "a.bgv"
    dest.write_bytes(b"precious")
    result = run(runner, "encode", src, "-l", lam)
    assert result.exit_code == 1
    assert error_lines(result.stderr) == [f"bgcodec: error: {dest} exists (use --force to overwrite)"]
    assert dest.read_bytes() == b"precious"
    assert listing(tmp_path) == {"a.png", "a.bgv"}

    result = run(runner, "encode", src, "-l", lam, "--force")
    assert result.exit_code == 0, result.stderr
    assert dest.read_bytes() != b"precious" and len(dest.read_bytes()) > 20
    assert listing(tmp_path) == {"a.png", "a.bgv"}


def test_lambda_and_quality_together_is_a_usage_error(runner, tmp_path, lam):
    src = write_png(tmp_path / "a.png")
    result = runner.invoke(cli, ["encode", str(src), "-l", lam, "-q", "50"])
    assert result.exit_code == 2
    assert "mutually exclusive" in result.stderr
    result = runner.invoke(cli, ["encode", str(src), "-q", "101"])
    assert result.exit_code == 2
    assert listing(tmp_path) == {"a.png"}


def test_several_inputs_need_a_directory(runner, tmp_path):
    a, b = write_png(tmp_path / "a.png"), write_png(tmp_path / "b.png")
    for output in ["single.bgv", "-"]:
        result = runner.invoke(cli, ["encode", str(a), str(b), "-o", str(tmp_path / output) if output != "-" else "-"])
        assert result.exit_code == 2
        assert "directory" in result.stderr
    assert listing(tmp_path) == {"a.png", "b.png"}


@pytest.mark.parametrize("value", ["out of range", "-0.01", "0", "nan", "inf"])
def test_a_bad_lambda_is_a_usage_error_before_the_model_loads(runner, tmp_path, codec, value, monkeypatch):
    from bgcodec.codec import Codec

    src = write_png(tmp_path / "a.png")
    lo, hi = codec.lambda_range
    monkeypatch.setattr(Codec, "load", classmethod(lambda *a, **k: pytest.fail("the model was loaded")))
    result = run(runner, "encode", src, "-l", repr(hi * 10) if value == "out of range" else value)
    assert result.exit_code == 2
    assert "-l/--lambda" in result.stderr and f"{lo:.4g} to {hi:.4g}" in result.stderr
    assert listing(tmp_path) == {"a.png"}


def test_a_missing_cuda_device_is_a_usage_error(runner, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    result = run(runner, "encode", write_png(tmp_path / "a.png"), "--device", "cuda")
    assert result.exit_code == 2 and "no CUDA device" in result.stderr


def test_a_file_that_is_not_bgv_fails_before_the_model_loads(runner, tmp_path, monkeypatch):
    from bgcodec.codec import Codec

    fake = tmp_path / "photo.bgv"
    fake.write_bytes(write_png(tmp_path / "a.png").read_bytes())
    monkeypatch.setattr(Codec, "load", classmethod(lambda *a, **k: pytest.fail("the model was loaded")))
    result = run(runner, "decode", fake)
    assert result.exit_code == 1 and error_lines(result.stderr) == [f"bgcodec: error: {fake}: not a bgcodec file "
                                                                      "(bad magic)"]


def test_a_relative_output_folder_is_made(runner, tmp_path, lam, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_png(tmp_path / "a.png")
    result = run(runner, "encode", "a.png", "-l", lam, "-o", "new/deeper/")
    assert result.exit_code == 0, result.stderr
    assert listing(tmp_path / "new" / "deeper") == {"a.bgv"}


def test_an_output_folder_that_does_not_exist_fails_before_the_work(runner, tmp_path, lam, monkeypatch):
    from bgcodec.codec import Codec

    src = write_png(tmp_path / "a.png")
    monkeypatch.setattr(Codec, "load", classmethod(lambda *a, **k: pytest.fail("the model was loaded")))
    result = run(runner, "encode", src, "-l", lam, "-o", tmp_path / "missing" / "a.bgv")
    assert result.exit_code == 1 and "cannot write" in error_lines(result.stderr)[0]


def test_alpha_is_kept_losslessly_unless_dropped(runner, tmp_path, lam):
    src = write_png(tmp_path / "rgba.png", height=80, width=96, mode="RGBA")
    result = run(runner, "encode", src, "-l", lam, "-o", tmp_path / "a.bgv")
    assert result.exit_code == 0, result.stderr
    result = run(runner, "decode", tmp_path / "a.bgv", "-o", tmp_path / "a.png")
    assert result.exit_code == 0, result.stderr
    with Image.open(src) as original, Image.open(tmp_path / "a.png") as decoded:
        assert decoded.mode == "RGBA"
        assert np.array_equal(np.asarray(decoded)[..., 3], np.asarray(original)[..., 3])
    result = run(runner, "decode", tmp_path / "a.bgv", "-o", tmp_path / "a.jpg")
    assert result.exit_code == 1 and "cannot store the image's alpha channel" in error_lines(result.stderr)[0]
    assert not (tmp_path / "a.jpg").exists()
    result = run(runner, "info", "--json", tmp_path / "a.bgv")
    info = json.loads(result.stdout)
    assert info["channels"] == "RGB+alpha" and info["alpha_bytes"] > 0
    result = run(runner, "encode", src, "-l", lam, "--drop-alpha", "-o", tmp_path / "b.bgv")
    assert result.exit_code == 0, result.stderr
    assert f"bgcodec: note: {src}: dropped alpha channel" in result.stderr.splitlines()


def test_a_grayscale_image_comes_back_gray(runner, tmp_path, lam):
    src = tmp_path / "gray.png"
    gray = (np.add.outer(np.arange(80), np.arange(96)) % 256).astype(np.uint8)
    Image.fromarray(gray).save(src)
    assert run(runner, "encode", src, "-l", lam, "-o", tmp_path / "g.bgv").exit_code == 0
    assert run(runner, "decode", tmp_path / "g.bgv", "-o", tmp_path / "g.png").exit_code == 0
    with Image.open(tmp_path / "g.png") as decoded:
        assert decoded.mode == "L" and decoded.size == (96, 80)


def test_notes_and_quiet(runner, tmp_path, lam):
    src = tmp_path / "gray16.png"
    Image.fromarray(np.full((16, 16), 30000, np.uint16)).save(src)
    result = run(runner, "encode", src, "-l", lam)
    assert result.exit_code == 0
    assert f"bgcodec: note: {src}: converted 16-bit to 8-bit" in result.stderr.splitlines()
    result = run(runner, "encode", src, "-l", lam, "--force", "--quiet")
    assert result.exit_code == 0
    assert result.stderr == "" and result.stdout == ""


def test_max_pixels(runner, tmp_path, lam):
    src = write_png(tmp_path / "a.png", 16, 16)
    result = run(runner, "encode", src, "-l", lam, "--max-pixels", 100)
    assert result.exit_code == 1
    assert "16x16 = 256 pixels; the limit is 100 pixels" in result.stderr
    assert listing(tmp_path) == {"a.png"}


@pytest.mark.parametrize("case", ["flipped", "truncated", "png", "empty", "missing"])
def test_bad_bgv_inputs(runner, tmp_path, bgv, case):
    data = bgv.read_bytes()
    bad = tmp_path / "in" / f"{case}.bgv"
    bad.parent.mkdir()
    if case == "flipped":
        corrupt = bytearray(data)
        corrupt[len(corrupt) // 2] ^= 0x10
        bad.write_bytes(bytes(corrupt))
    elif case == "truncated":
        bad.write_bytes(data[: len(data) - 7])
    elif case == "png":
        bad.write_bytes(write_png(tmp_path / "real.png").read_bytes())
    elif case == "empty":
        bad.write_bytes(b"")
    out = tmp_path / "out"
    out.mkdir()
    result = run(runner, "decode", bad, "-o", out)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bgcodec: error: {bad}: "), result.stderr
    assert "Traceback" not in result.output
    assert listing(out) == set()  # no output, no temporary file


def test_good_and_bad_bgv_in_one_batch(runner, tmp_path, bgv):
    (tmp_path / "bad.bgv").write_bytes(b"garbage")
    out = tmp_path / "decoded"
    result = run(runner, "decode", bgv, tmp_path / "bad.bgv", "-o", f"{out}/")
    assert result.exit_code == 1
    assert len(error_lines(result.stderr)) == 1 and "bad.bgv" in error_lines(result.stderr)[0]
    assert listing(out) == {"img.png"}
    assert "decoded 1 of 2 inputs (1 failed)" in result.stderr


def test_same_output_for_two_inputs(runner, tmp_path, lam):
    write_png(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    write_png(tmp_path / "sub" / "a.png", seed=3)
    out = tmp_path / "out"
    result = run(runner, "encode", tmp_path / "a.png", tmp_path / "sub" / "a.png", "-l", lam, "-o", f"{out}/", "--force")
    assert result.exit_code == 1
    assert "also the output of" in error_lines(result.stderr)[0]
    assert listing(out) == {"a.bgv"}


def test_unexpected_exceptions_are_one_line(runner, tmp_path, lam, codec, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(type(codec), "encode", boom)
    src = write_png(tmp_path / "a.png")
    result = run(runner, "encode", src, "-l", lam)
    assert result.exit_code == 1
    assert error_lines(result.stderr) == [f"bgcodec: error: {src}: internal error: RuntimeError: boom second line"]
    assert "Traceback" not in result.output
    assert listing(tmp_path) == {"a.png"}


def test_interrupt_exits_130_without_partial_output(runner, tmp_path, lam, codec, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(codec), "encode", interrupt)
    src = write_png(tmp_path / "a.png")
    result = run(runner, "encode", src, "-l", lam)
    assert result.exit_code == 130
    assert listing(tmp_path) == {"a.png"}


def test_missing_weights_is_one_error_line(runner, tmp_path, lam):
    src = write_png(tmp_path / "a.png")
    result = run(runner, "encode", src, "-l", lam, "--weights", tmp_path / "nope.safetensors")
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("bgcodec: error: ")
    assert listing(tmp_path) == {"a.png"}


# -- info -------------------------------------------------------------------------


def test_info_plain(runner, bgv):
    result = run(runner, "info", bgv)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"{bgv}:"
    fields = dict(line.split(":", 1) for line in lines[1:])
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert fields["width"] == "48" and fields["height"] == "40" and fields["depth"] == "9"
    # values are aligned in one column
    assert len({line.index(line.split(":", 1)[1].strip()) for line in lines[1:]}) == 1


def test_info_json(runner, bgv, tmp_path):
    result = run(runner, "info", "--json", bgv)
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert isinstance(info, dict)
    assert (info["width"], info["height"], info["depth"]) == (48, 40, 9)
    assert info["total_bytes"] == bgv.stat().st_size
    assert info["file"] == str(bgv)

    (tmp_path / "bad.bgv").write_bytes(b"nope")
    result = run(runner, "info", "--json", bgv, tmp_path / "bad.bgv", bgv)
    assert result.exit_code == 1
    infos = json.loads(result.stdout)
    assert isinstance(infos, list) and len(infos) == 2
    assert len(error_lines(result.stderr)) == 1


# -- Python API -------------------------------------------------------------------


def test_api_round_trip(tmp_path, codec, lam, monkeypatch):
    monkeypatch.setitem(bgcodec._codecs, (None, "auto"), codec)  # reuse the loaded model
    array = np.random.default_rng(4).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    data = bgcodec.compress(array, float(lam))
    assert isinstance(data, bytes)
    image = bgcodec.decompress(data)
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (28, 20)

    path = write_png(tmp_path / "p.png", 16, 24)
    from_path = bgcodec.compress(path, quality=60)
    from_pil = bgcodec.compress(Image.open(path), quality=60)
    assert from_path == from_pil
    assert bgcodec.decompress(from_path).size == (24, 16)
    with pytest.raises(ValueError):
        bgcodec.compress(array, 0.01, quality=50)


def test_api_takes_what_users_pass_and_words_its_errors_for_python(tmp_path, codec, lam, monkeypatch):
    from PIL import ImageOps

    monkeypatch.setitem(bgcodec._codecs, (None, "auto"), codec)
    path = write_png(tmp_path / "p.png", 40, 56)
    data = bgcodec.compress(path, float(lam))
    (tmp_path / "p.bgv").write_bytes(data)
    with open(path, "rb") as f:
        assert bgcodec.compress(f, float(lam)) == data == bgcodec.compress(path.read_bytes(), float(lam))
    with open(tmp_path / "p.bgv", "rb") as f:
        from_file = bgcodec.decompress(f)
    assert bgcodec.decompress(tmp_path / "p.bgv").tobytes() == bgcodec.decompress(str(tmp_path / "p.bgv")).tobytes()
    assert from_file.tobytes() == bgcodec.decompress(data).tobytes()

    rotated = Image.open(path)
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    rotated.save(tmp_path / "r.png", exif=exif)
    with Image.open(tmp_path / "r.png") as tagged:
        assert bgcodec.decompress(bgcodec.compress(tagged, float(lam))).size == (40, 56)
    assert ImageOps.exif_transpose(Image.open(tmp_path / "r.png")).size == (40, 56)

    with pytest.raises(TypeError, match="lmbda must be a number"):
        bgcodec.compress(path, "0.01")
    with pytest.raises(TypeError, match="compress\\(\\) takes"):
        bgcodec.compress(12345, 0.01)
    with pytest.raises(TypeError, match="decompress\\(\\) takes"):
        bgcodec.decompress(12345)
    rgba = np.random.default_rng(5).integers(0, 256, (40, 56, 4), dtype=np.uint8)
    image = bgcodec.decompress(bgcodec.compress(Image.fromarray(rgba, "RGBA"), float(lam)))
    assert image.mode == "RGBA" and np.array_equal(np.asarray(image)[..., 3], rgba[..., 3])


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"bgcodec {bgcodec.__version__}"


def test_an_image_wider_than_a_tile_is_coded_in_tiles(runner, codec, lam, tmp_path):
    from bgcodec.config import TILE_SIZE

    png = write_png(tmp_path / "wide.png", 40, TILE_SIZE + 76)
    assert run(runner, "encode", png, "-l", lam).exit_code == 0
    info = json.loads(run(runner, "info", "--json", tmp_path / "wide.bgv").stdout)
    assert (info["coding"], info["tiles"], info["tile_size"]) == ("tiled", 2, TILE_SIZE)
    assert run(runner, "decode", tmp_path / "wide.bgv", "-o", tmp_path / "decoded.png").exit_code == 0
    decoded = np.asarray(Image.open(tmp_path / "decoded.png"))
    assert np.array_equal(decoded, codec.decode((tmp_path / "wide.bgv").read_bytes()))
