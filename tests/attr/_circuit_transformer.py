"""A tiny transformer with a known circuit, trained in a second or two, for the RelP tests.

Task: sequences ``[BOS, x1, x2, x3, x4]`` over a vocabulary of 4 tokens; the label, read at the
last position, is ``(x1 + x3) mod 4``. One pre-LN block with 4 heads and a GELU MLP. The heads
have fixed key masks: head 0 may attend to {BOS, x1}, head 1 to {BOS, x3}, heads 2 and 3 only to
{BOS, x2, x4}. So the circuit is known by construction: heads 0 and 1 move x1 and x3 to the last
position and the MLP combines them (the modular sum is not linear in the one-hot tokens); heads
2 and 3 carry nothing about x1 or x3.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VOCAB, LENGTH, HEADS = 4, 5, 4
BOS = VOCAB


class MaskedHeads(nn.Module):
    """Multi-head attention with fixed per-head key masks; returns the heads' outputs ``z``
    concatenated, ``(N, T, H·d)``, before the output projection (like ``BertSelfAttention``)."""

    def __init__(self, dim: int, heads: int, allowed: Tensor) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.register_buffer("allowed", allowed)  # (H, T_query, T_key) bool

    def forward(self, x: Tensor) -> Tensor:
        n, t, dim = x.shape
        q, k, v = (u.unflatten(-1, (self.heads, -1)).transpose(1, 2) for u in self.qkv(x).chunk(3, -1))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(dim // self.heads)
        scores = scores.masked_fill(~self.allowed[:, :t, :t], float("-inf"))
        pattern = torch.softmax(scores, dim=-1)
        return torch.matmul(pattern, v).transpose(1, 2).reshape(n, t, dim)


class CircuitTransformer(nn.Module):
    def __init__(self, dim: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB + 1, dim)
        self.position = nn.Parameter(torch.randn(LENGTH, dim) * 0.3)
        self.ln1, self.ln2, self.ln_f = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MaskedHeads(dim, HEADS, _head_masks())
        self.o_proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.unembed = nn.Linear(dim, VOCAB)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        x = x + self.o_proj(self.attn(self.ln1(x)))
        x = x + self.mlp(self.ln2(x))
        return self.unembed(self.ln_f(x[:, -1]))


def _head_masks() -> Tensor:
    keys = [{0, 1}, {0, 3}, {0, 2, 4}, {0, 2, 4}]
    allowed = torch.zeros(HEADS, LENGTH, LENGTH, dtype=torch.bool)
    for h, keep in enumerate(keys):
        for query in range(LENGTH):
            for key in range(query + 1):
                allowed[h, query, key] = key in keep
    return allowed


def dataset() -> tuple[Tensor, Tensor]:
    rows = torch.tensor(list(itertools.product(range(VOCAB), repeat=4)))
    tokens = torch.cat([torch.full((len(rows), 1), BOS), rows], 1)
    return tokens, (rows[:, 0] + rows[:, 2]) % VOCAB


def trained_model(seed: int = 0, steps: int = 150) -> CircuitTransformer:
    torch.manual_seed(seed)
    model = CircuitTransformer()
    tokens, labels = dataset()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(steps):
        optimiser.zero_grad()
        F.cross_entropy(model(tokens), labels).backward()
        optimiser.step()
    return model.eval()
