"""B1–B4 and F5a: bad hyperparameters, bad ``params`` and bad gradients raise clear errors
(torch's wording), before anything changes."""

from __future__ import annotations

import warnings

import pytest
import torch

from registry import OPTIM_DB, error_cases

RECORDS = [pytest.param(info, id=info.name) for info in OPTIM_DB]


def param():
    return torch.zeros(2, requires_grad=True)


@pytest.mark.parametrize("info, case", error_cases())
def test_bad_hyperparameter_at_construction(info, case):
    with pytest.raises(case.error, match=case.match):
        info.cls([param()], **case.kwargs)


@pytest.mark.parametrize("info, case", error_cases())
def test_bad_hyperparameter_in_a_param_group(info, case):
    """A bad value in a group dict fails like the constructor argument, and the optimizer
    keeps only its valid groups."""
    optimizer = info.cls([param()])
    with pytest.raises(case.error, match=case.match):
        optimizer.add_param_group({"params": [param()], **case.kwargs})
    assert len(optimizer.param_groups) == 1


@pytest.mark.parametrize("info", RECORDS)
class TestParamsArgument:
    def test_bare_tensor(self, info):
        with pytest.raises(
            TypeError,
            match="params argument given to the optimizer should be an iterable of Tensors or",
        ):
            info.cls(param())

    def test_empty_list(self, info):
        with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
            info.cls([])

    def test_not_a_tensor(self, info):
        with pytest.raises(TypeError, match="optimizer can only optimize Tensors"):
            info.cls([param(), 42])

    def test_non_leaf(self, info):
        with pytest.raises(ValueError, match="can't optimize a non-leaf Tensor"):
            info.cls([param() * 2])

    def test_duplicate_in_a_group_is_refused(self, info):
        """torch warns and steps the param twice; adamkit refuses it, naming the repeat."""
        p = param()
        with (
            pytest.warns(UserWarning, match="duplicate parameters"),
            pytest.raises(ValueError, match=r"^parameter 1 of the group appears in it twice$"),
        ):
            info.cls([p, p])

    def test_same_param_in_two_groups(self, info):
        p = param()
        with pytest.raises(
            ValueError, match="some parameters appear in more than one parameter group"
        ):
            info.cls([{"params": [p]}, {"params": [p]}])

    def test_group_without_params(self, info):
        with pytest.raises(KeyError, match="params"):
            info.cls([{"lr": 0.1}])

    def test_generator_is_consumed_once(self, info):
        params = [param(), param()]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            optimizer = info.cls(p for p in params)
        assert optimizer.param_groups[0]["params"] == params

    def test_unknown_backend(self, info):
        with pytest.raises(ValueError, match=r"Invalid backend: 'cuda-magic'"):
            info.cls([param()], backend="cuda-magic")

    def test_sparse_gradient_refused_before_any_change(self, info):
        """Where the rule has no sparse form (SGD and Adagrad have: tests/test_sparse.py)."""
        dense, sparse = param(), param()
        optimizer = info.cls([dense, sparse], lr=0.1)
        if optimizer.rule.steps_sparse(optimizer.param_groups[0]):
            pytest.skip(f"{info.name} steps sparse gradients")
        dense.grad = torch.ones(2)
        sparse.grad = torch.ones(2).to_sparse()
        with pytest.raises(
            RuntimeError, match=f"{optimizer.rule.name} does not support sparse gradients"
        ):
            optimizer.step()
        assert torch.equal(dense, torch.zeros(2)) and not optimizer.state


@pytest.mark.parametrize("backend", ["eager", "fused"])
@pytest.mark.parametrize("info", RECORDS)
class TestAtomicStep:
    """F5a and B4: a step that cannot complete raises before it changes anything."""

    def two_groups(self, info, backend):
        first, second = torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)
        optimizer = info.cls([{"params": [first]}, {"params": [second]}], lr=0.1, backend=backend)
        first.grad = torch.ones(2)
        second.grad = torch.ones(3)
        return optimizer, first, second

    def test_bad_gradient_in_group_two(self, info, backend):
        optimizer, first, second = self.two_groups(info, backend)
        second.grad.data = torch.ones(4)  # .data skips autograd's own shape check
        with pytest.raises(
            RuntimeError,
            match=r"^group 1, param 0: gradient of shape \(4,\) and dtype torch.float32 for a "
            r"param of shape \(3,\) and dtype torch.float32$",
        ):
            optimizer.step()
        assert torch.equal(first, torch.ones(2)) and not optimizer.state

    def test_exception_in_the_closure(self, info, backend):
        optimizer, first, _ = self.two_groups(info, backend)

        def closure():
            raise KeyError("data loader failed")

        with pytest.raises(KeyError, match="data loader failed"):
            optimizer.step(closure)
        assert torch.equal(first, torch.ones(2)) and not optimizer.state

    def test_exception_in_a_pre_hook(self, info, backend):
        optimizer, first, _ = self.two_groups(info, backend)

        def hook(optimizer, args, kwargs):
            raise ValueError("hook refused")

        optimizer.register_step_pre_hook(hook)
        with pytest.raises(ValueError, match="hook refused"):
            optimizer.step()
        assert torch.equal(first, torch.ones(2)) and not optimizer.state
