"""weight_decay_groups: which parameters of a Transformer-like model are decayed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import adamkit
from adamkit.param_groups import weight_decay_groups


class Attention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.q(x) @ self.k(x).transpose(-2, -1) / x.shape[-1] ** 0.5
        return self.out(scores.softmax(-1) @ self.v(x))


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.bias = nn.Parameter(torch.zeros(1, dim))  # 2-D, excluded by its name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x)) + self.bias


class TinyTransformer(nn.Module):
    def __init__(self, tied: bool, vocab: int = 11, dim: int = 8, length: int = 5) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.pos_embedding = nn.Parameter(torch.randn(length, dim))
        self.block = Block(dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        if tied:
            self.head.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens) + self.pos_embedding[: tokens.shape[-1]]
        return self.head(self.norm(self.block(x)))


class WithNoWeightDecay(TinyTransformer):
    def no_weight_decay(self) -> set[str]:
        return {"pos_embedding"}


DECAYED = [
    "embedding.weight",
    "block.attn.q.weight",
    "block.attn.k.weight",
    "block.attn.v.weight",
    "block.attn.out.weight",
    "block.mlp.0.weight",
    "block.mlp.2.weight",
]
NOT_DECAYED = [
    "pos_embedding",
    "block.bias",  # a module's own parameters come before its children's
    "block.norm1.weight",
    "block.norm1.bias",
    "block.attn.q.bias",
    "block.attn.k.bias",
    "block.attn.v.bias",
    "block.attn.out.bias",
    "block.norm2.weight",
    "block.norm2.bias",
    "block.mlp.0.bias",
    "block.mlp.2.bias",
    "norm.weight",
    "norm.bias",
]


def names(groups):
    return [(group["param_names"], group["weight_decay"]) for group in groups]


@pytest.mark.parametrize("tied", [True, False], ids=["tied_head", "untied_head"])
def test_transformer_split(tied):
    model = WithNoWeightDecay(tied)
    groups = weight_decay_groups(model, 0.1)
    decayed = DECAYED if tied else [*DECAYED, "head.weight"]
    assert names(groups) == [(decayed, 0.1), (NOT_DECAYED, 0.0)]
    by_name = dict(model.named_parameters())
    for group in groups:
        assert all(
            p is by_name[n] for p, n in zip(group["params"], group["param_names"], strict=True)
        )


def test_without_no_weight_decay_a_matrix_is_decayed():
    groups = weight_decay_groups(TinyTransformer(tied=True), 0.1)
    assert "pos_embedding" in groups[0]["param_names"]
    assert "pos_embedding" not in groups[1]["param_names"]


def test_exclude_takes_names_and_patterns():
    model = WithNoWeightDecay(tied=False)
    groups = weight_decay_groups(model, 0.1, exclude=["embedding.weight", "block.attn.[qk].*"])
    excluded = ["embedding.weight", "block.attn.q.weight", "block.attn.k.weight"]
    decayed = [name for name in [*DECAYED, "head.weight"] if name not in excluded]
    assert groups[0]["param_names"] == decayed
    assert sorted(groups[1]["param_names"]) == sorted([*NOT_DECAYED, *excluded])


def test_frozen_params_are_left_out_and_empty_groups_dropped():
    model = WithNoWeightDecay(tied=True)
    model.embedding.requires_grad_(False)
    model.norm.requires_grad_(False)
    groups = weight_decay_groups(model, 0.1)
    assert groups[0]["param_names"] == DECAYED[1:]
    assert groups[1]["param_names"] == [n for n in NOT_DECAYED if not n.startswith("norm.")]
    norms_only = nn.LayerNorm(4)
    assert names(weight_decay_groups(norms_only, 0.1)) == [(["weight", "bias"], 0.0)]
    norms_only.requires_grad_(False)
    assert weight_decay_groups(norms_only, 0.1) == []


@pytest.mark.parametrize("optimizer_cls", [adamkit.AdamW, torch.optim.AdamW])
def test_groups_drive_adamw(optimizer_cls):
    """With zero gradients AdamW only decays: decayed params shrink by (1 − lr·λ)^t, the
    others do not move."""
    torch.manual_seed(0)
    model = WithNoWeightDecay(tied=True).double()
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    optimizer = optimizer_cls(weight_decay_groups(model, 0.1), lr=0.01)
    for _ in range(3):
        for param in model.parameters():
            param.grad = torch.zeros_like(param)
        optimizer.step()
    for name, param in model.named_parameters():
        factor = (1 - 0.01 * 0.1) ** 3 if name in DECAYED else 1.0
        torch.testing.assert_close(param.detach(), before[name] * factor, rtol=1e-15, atol=0)
        assert torch.equal(param.detach(), before[name]) == (name in NOT_DECAYED)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"Invalid weight_decay value: -0\.1"):
        weight_decay_groups(nn.Linear(2, 2), -0.1)
    with pytest.raises(TypeError, match="exclude must be an iterable"):
        weight_decay_groups(nn.Linear(2, 2), 0.1, exclude="weight")
