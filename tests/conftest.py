"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The tiny model's matrices are too small to gain from a second thread, and on a shared 2-core machine
    threads wait on each other; one thread keeps the tests fast and their timings stable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
