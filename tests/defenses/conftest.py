"""The defense tests' arithmetic is tiny: every test runs on one torch thread."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """`one_torch_thread` for every test here."""
