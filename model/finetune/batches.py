"""The data a run sees, step by step: the order of the pairs is a pure function of
``(seed, epoch)``, so a run resumed from a checkpoint sees the same batches as one that never
stopped; pixels come from memory or are decoded on demand (by DataLoader workers if asked)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from clipsearch.model.base import EmbeddingModel
from clipsearch.model.finetune.config import TrainConfig
from clipsearch.model.finetune.data import Pair, PairDataset, dataset_pixels


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of pair indices for ``epoch``: a pure function of (n, seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


class Batches:
    """Global batches of indices by step: step s is batch s % per_epoch of epoch s // per_epoch."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def __call__(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_order(self.n, self.seed, epoch)
        return self._order[i * self.batch_size : (i + 1) * self.batch_size]


class Source:
    """Pixels and tokens by pair index, from memory or decoded on demand."""

    def __init__(self, pairs: Sequence[Pair], clip: EmbeddingModel, cfg: TrainConfig) -> None:
        r = clip.image_size
        cache = cfg.cache_pixels == "yes" or (
            cfg.cache_pixels == "auto" and len(pairs) * 3 * r * r * 4 < 2**30
        )
        # Trailing padding is dropped only for CLIP (pooled at the end-of-text token); a tower
        # pooled at the last position (SigLIP) needs the full context length.
        trim = getattr(clip, "family", "clip") == "clip"
        self.dataset = PairDataset(
            pairs,
            clip.preprocessor if hasattr(clip, "preprocessor") else clip.preprocess,
            clip.tokenize,
            trim=trim,
        )
        self.tokens = self.dataset.tokens
        self.pixels: torch.Tensor | None = None
        if cache:
            self.pixels = dataset_pixels(self.dataset)
        self.num_workers = cfg.num_workers

    def batches(
        self, indices_of: Callable[[int], torch.Tensor], start: int, stop: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(pixels, tokens) of steps ``start .. stop-1``; decoded by persistent workers if asked."""
        if self.pixels is not None:
            for step in range(start, stop):
                idx = indices_of(step)
                yield self.pixels[idx], self.tokens[idx]
            return
        if self.num_workers > 0:
            sampler = _StepSampler(indices_of, start, stop)
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=sampler, num_workers=self.num_workers, prefetch_factor=2
            )
            yield from loader
            return
        for step in range(start, stop):
            items = [self.dataset[int(i)] for i in indices_of(step)]
            yield torch.stack([p for p, _ in items]), torch.stack([t for _, t in items])


class _StepSampler:
    """A batch sampler: the index lists of steps ``start .. stop-1``."""

    def __init__(self, indices_of: Callable[[int], torch.Tensor], start: int, stop: int) -> None:
        self.indices_of, self.start, self.stop = indices_of, start, stop

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.indices_of(step).tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
