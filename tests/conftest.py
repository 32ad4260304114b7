import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The test machine has 2 cores shared with other jobs; torch's 2-thread pool then
    spends most of its time waiting, so the in-process models run on one thread (the
    portability tests start processes with other counts)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def _batches_in_process():
    """In-process CLI runs code their inputs in this process, not in workers, whatever the
    load of the machine (the -j tests start real processes)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("bgcodec.resources.idle_cores", lambda: 1)
        yield


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory):
    """A few small photos-like images, one smaller than the crop and one JPEG."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:120]
    for i in range(3):
        base = np.stack([np.sin(xx / (7 + i)), np.cos(yy / (5 + i)), np.sin((xx + yy) / 11)], -1)
        im = ((base * 0.4 + 0.5) * 255 + rng.normal(0, 4, base.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(im).save(root / f"img{i}.png")
    Image.fromarray(im[:40, :50]).save(root / "small.jpg", quality=95)
    return root
