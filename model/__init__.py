"""clipsearch: model layer (CLIP, its checkpoints, tokenizer and preprocessing)."""

from model.api import build, load
from model.checkpoints import load_checkpoint, save_pretrained
from model.clip import CLIP, CLIPConfig, TextConfig, VisionConfig
from model.errors import CheckpointError, DownloadError, ModelError

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
