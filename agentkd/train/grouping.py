"""Length-grouped batches over the whole epoch, seeded: the same examples, far fewer pad tokens.

transformers' `LengthGroupedSampler` sorts by length only within random mega-batches of 50 batches (fewer on
a small set: min(50, N / (4 × batch))), so a few hundred curated trajectories keep much of their padding
(measured on tools/bench/train.py, 96 examples at batch 8: pad share 25% random, 15% with it). Here every
epoch shuffles the examples (so equal lengths mix), sorts them by length, cuts batches of `batch_size`
consecutive examples, and shuffles the order of those batches (a last, smaller one stays last). The generator is seeded by (seed, epoch), not
the global RNG, so every rank of a distributed run sees the same order and `--resume` (which skips the
batches already trained) continues exactly where the interrupted run was.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any


def grouped_order(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[int]:
    """The example indices of one epoch, in batches of `batch_size` similar lengths, in random batch order."""
    import torch

    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    shuffled = torch.randperm(len(lengths), generator=gen).tolist()
    by_length = sorted(shuffled, key=lambda i: lengths[i])  # stable: ties keep the shuffled order
    batches = [by_length[i:i + batch_size] for i in range(0, len(by_length), batch_size)]
    full = len(lengths) // batch_size  # a last, smaller batch stays last: the DataLoader cuts at the same places
    order = torch.randperm(full, generator=gen).tolist() + list(range(full, len(batches)))
    return [i for b in order for i in batches[b]]


class EpochLengthGroupedSampler:
    """A torch `Sampler` of `grouped_order` with `set_epoch` (called by transformers' Trainer every epoch)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(grouped_order(self.lengths, self.batch_size, self.seed, self.epoch))


def train_lengths(dataset: Any) -> list[int]:
    return [len(ids) for ids in dataset["input_ids"]]
