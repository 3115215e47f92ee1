"""The defense tests' arithmetic is tiny: torch's thread pool only adds waiting (on a busy
2-core machine a 100-step fine-tune took 13 s on 2 threads, under 1 s on one)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
