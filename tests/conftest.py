import pytest
import torch


@pytest.fixture
def float64_default():
    """float64 default dtype, so 0-dim state (step, mu_product) is float64 as in torch."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
