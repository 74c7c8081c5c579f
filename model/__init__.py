"""clipsearch: model layer (CLIP, its checkpoints, tokenizer and preprocessing)."""

from clipsearch.model.api import build, load
from clipsearch.model.checkpoints import load_checkpoint, save_pretrained
from clipsearch.model.clip import CLIP, CLIPConfig, TextConfig, VisionConfig
from clipsearch.model.errors import CheckpointError, DownloadError, ModelError

__all__ = [
    "CLIP",
    "CLIPConfig",
    "CheckpointError",
    "DownloadError",
    "ModelError",
    "TextConfig",
    "VisionConfig",
    "build",
    "load",
    "load_checkpoint",
    "save_pretrained",
]
