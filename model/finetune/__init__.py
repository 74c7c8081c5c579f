"""Fine-tuning CLIP on image/caption pairs: data, synthetic set, loss, training loop, evaluation.

Submodules: ``data`` (pair sets and the train/val split), ``synthetic`` (a generated captioned set),
``loss`` (``ClipLoss``), ``train`` (``TrainConfig``, ``train``), ``evaluate`` (recall@K, zero-shot),
``wise`` (WiSE-FT weight interpolation), ``cli`` (the ``finetune``/``eval``/``wise`` subcommands).
"""

from __future__ import annotations

from clipsearch.model.errors import ModelError


class FinetuneError(ModelError):
    """Fine-tuning or evaluation cannot go on: bad data, bad options, or an unusable checkpoint."""


__all__ = ["FinetuneError"]
