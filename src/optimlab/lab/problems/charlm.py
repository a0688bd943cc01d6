"""A tiny character-level transformer language model on the Python standard library's source.

Every machine with Python has the text: the ``*.py`` files directly inside
``sysconfig.get_paths()["stdlib"]``, taken in sorted order until
:data:`CHARS` bytes are collected and concatenated.  The last 10 % is held out
for validation.  Bytes are the tokens (ASCII; the rare non-ASCII byte becomes
token 127), so the loss in bits per byte is bits per character for this text.
Which files exist differs between Python versions, so the text's SHA-256 is
part of every run's configuration.

The model is a decoder-only transformer (pre-LayerNorm blocks, causal
self-attention, GELU MLP, learned positions): 2 layers, width 64, 4 heads,
context 64, about 110k weights.  Validation loss is measured on 128 fixed
windows spread over the held-out text (fewer made the measurement itself too
noisy to compare schedules: 2,000 characters decide the third decimal).
"""

from __future__ import annotations

import hashlib
import math
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Problem, Task

__all__ = ["CHARS", "CharLM", "TinyGPT", "corpus", "problems"]

CHARS = 400_000
VOCAB = 128
VAL_WINDOWS = 128


@cache
def corpus() -> tuple[Tensor, str]:
    """The token ids (uint8 as int64) of the text, and a short name with its hash."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    chunks, size = [], 0
    for path in files:
        data = path.read_bytes()
        chunks.append(data)
        size += len(data)
        if size >= CHARS:
            break
    text = b"".join(chunks)[:CHARS]
    digest = hashlib.sha256(text).hexdigest()[:12]
    tokens = torch.frombuffer(bytearray(text), dtype=torch.uint8).clamp_max(VOCAB - 1).long()
    return tokens, f"python{sys.version_info.major}.{sys.version_info.minor}-stdlib-{digest}"


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    def __init__(self, layers: int, width: int, heads: int, context: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.pos = nn.Parameter(torch.zeros(context, width))
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCAB)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, idx: Tensor) -> Tensor:
        x = self.embed(idx) + self.pos[: idx.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


@dataclass(frozen=True)
class CharLM(Problem):
    has_model: bool = True
    evals: int | None = 10
    step_ms: float = 25.0
    loss_scale: float = 1 / math.log(2)
    loss_unit: str = "bits/char"

    def make(self, seed: int, settings: Mapping[str, Any]) -> Task:
        return _CharLMTask(seed, settings)


class _CharLMTask(Task):
    def __init__(self, seed: int, settings: Mapping[str, Any]) -> None:
        tokens, _ = corpus()
        split = int(len(tokens) * 0.9)
        self.train, self.val = tokens[:split], tokens[split:]
        self.context = int(settings["context"])
        self.batch_size = int(settings["batch_size"])
        self.model = TinyGPT(
            int(settings["layers"]), int(settings["width"]), int(settings["heads"]), self.context
        )
        self.params = list(self.model.parameters())
        self._generator = torch.Generator().manual_seed(4000 + seed)
        windows = int(settings.get("val_windows", VAL_WINDOWS))
        starts = torch.linspace(0, len(self.val) - self.context - 1, windows).long()
        self.val_windows = torch.stack([self.val[s : s + self.context + 1] for s in starts])

    def draw(self) -> Tensor:
        high = len(self.train) - self.context - 1
        starts = torch.randint(high, (self.batch_size,), generator=self._generator)
        return self.train[starts[:, None] + torch.arange(self.context + 1)]

    def cast(self, dtype: torch.dtype) -> None:
        self.model.to(dtype)
        self.params = list(self.model.parameters())

    def _loss(self, windows: Tensor) -> Tensor:
        logits = self.model(windows[:, :-1]).float()  # (the cross-entropy in float32)
        return F.cross_entropy(logits.reshape(-1, VOCAB), windows[:, 1:].reshape(-1))

    def loss(self, batch: Tensor) -> Tensor:
        self.model.train()
        return self._loss(batch)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        loss = self._loss(self.val_windows).item()
        return {"val_loss": loss, "val_bpc": loss / math.log(2)}


def problems() -> list[CharLM]:
    _, text = corpus()
    return [
        CharLM(
            name="charlm",
            title="Character-level transformer LM (Python stdlib source)",
            description=(
                f"{CHARS // 1000} KB of the standard library's *.py files ({text}), last 10 % "
                "held out; a 2-layer decoder-only transformer (width 64, 4 heads, context 64, "
                f"~110k weights), batches of 16 windows of 64 characters; validation on "
                f"{VAL_WINDOWS} fixed held-out windows. Losses in bits per character (the "
                "cross-entropy divided by ln 2): 7 bits is a uniform guess over ASCII."
            ),
            target=2.0,
            target_text="validation loss ≤ 2.89 bits per character",
            lr_center=dict(sgd=0.5, momentum=0.2, adagrad=2e-2, rmsprop=3e-3, adam=1e-2),
            settings={
                "batch_size": 16,
                "context": 64,
                "layers": 2,
                "width": 64,
                "heads": 4,
                "text": text,
                "val_windows": VAL_WINDOWS,
            },  # fmt: skip
        )
    ]
