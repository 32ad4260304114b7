import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The test machine has 2 cores shared with other jobs; torch's 2-thread pool then
    spends most of its time waiting, so the in-process models run on one thread.
    (The codec itself always codes on one thread; tests that need other counts set them.)"""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
