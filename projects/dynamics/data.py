"""The offline corpus, its tokens, and the batch sampler whose position a checkpoint holds.

Nothing is downloaded: the default text is ``pydoc_data.topics`` (the Python documentation
that ships with every Python, ~0.46 M characters). Sampling draws window offsets from one
``torch.Generator``; its state *is* the sampler position, so restoring it replays the same
batches after a resume. Noisy batches draw from the same generator, for the same reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

WIKITEXT = (("wiki.train.tokens", "wiki.valid.tokens"), ("wiki.train.raw", "wiki.valid.raw"))


def read_corpus(source: str, val_fraction: float, max_chars: int = 0) -> tuple[str, str]:
    """(train text, validation text) from 'pydoc', a text file, or a WikiText folder."""
    if source == "pydoc":
        from pydoc_data.topics import topics

        text = "\n".join(topics[k] for k in sorted(topics))
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            for train_name, val_name in WIKITEXT:
                if (path / train_name).exists() and (path / val_name).exists():
                    train = (path / train_name).read_text(encoding="utf-8")
                    val = (path / val_name).read_text(encoding="utf-8")
                    return (train[:max_chars] if max_chars else train), val
            raise FileNotFoundError(f"{path} holds neither wiki.train.tokens/wiki.valid.tokens nor the .raw pair")
        text = path.read_text(encoding="utf-8")
    if max_chars:
        text = text[:max_chars]
    cut = int(len(text) * (1 - val_fraction))
    return text[:cut], text[cut:]


@dataclass
class Vocab:
    """Characters (from the training text) or raw UTF-8 bytes; unknown characters map to 0."""

    kind: str
    chars: list[str]

    @classmethod
    def build(cls, kind: str, text: str) -> "Vocab":
        return cls(kind, sorted(set(text)) if kind == "char" else [])

    @property
    def size(self) -> int:
        return len(self.chars) if self.kind == "char" else 256

    def encode(self, text: str):
        import torch

        if self.kind == "byte":
            return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()
        index = {c: i for i, c in enumerate(self.chars)}
        return torch.tensor([index.get(c, 0) for c in text], dtype=torch.long)


class Corpus:
    """Token tensors for train and validation, plus batch drawing."""

    def __init__(self, source: str, tokens: str, context: int, val_fraction: float,
                 max_chars: int = 0) -> None:
        train, val = read_corpus(source, val_fraction, max_chars)
        self.vocab = Vocab.build(tokens, train)
        self.train, self.val = self.vocab.encode(train), self.vocab.encode(val)
        self.context = context
        if len(self.train) <= context + 1 or len(self.val) <= context + 1:
            raise ValueError(f"corpus too short for data.context={context}: "
                             f"{len(self.train)} train / {len(self.val)} val tokens")

    def batch(self, batch_size: int, gen: Any, noise: str | None = None):
        """(x, y) of shape (batch, context); ``noise`` corrupts the batch (inputs and targets)."""
        import torch

        starts = torch.randint(0, len(self.train) - self.context - 1, (batch_size,), generator=gen)
        seq = torch.stack([self.train[s:s + self.context + 1] for s in starts.tolist()])
        if noise == "random":
            seq = torch.randint(0, self.vocab.size, seq.shape, generator=gen)
        elif noise == "shuffle":
            perm = torch.argsort(torch.rand(seq.shape, generator=gen), dim=1)
            seq = torch.gather(seq, 1, perm)
        return seq[:, :-1], seq[:, 1:]

    def val_batches(self, batch_size: int, n_batches: int):
        """Fixed, evenly spaced validation windows: every evaluation sees the same text."""
        import torch

        n = batch_size * n_batches
        last = len(self.val) - self.context - 1
        starts = torch.linspace(0, last, n).long().tolist()
        seq = torch.stack([self.val[s:s + self.context + 1] for s in starts])
        return [(seq[i:i + batch_size, :-1], seq[i:i + batch_size, 1:]) for i in range(0, n, batch_size)]
