import pytest
import torch

# One intra-op thread per test process: the tests' tensors are small, and `make test` runs a
# process per core (pytest-xdist), where more threads only contend (the lab's fixtures ran
# ten times slower with two threads in each of two processes on two cores)
torch.set_num_threads(1)


@pytest.fixture
def float64_default():
    """float64 default dtype, so 0-dim state (step, mu_product) is float64 as in torch."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
