"""What a first run needs to be told: where the demo's model lives (``clipsearch demo`` trains it
there, offline) and how it searches a folder of one's own when no other model can be had."""

from __future__ import annotations

import shlex
from pathlib import Path

__all__ = ["demo_dir", "offline_hint"]


def demo_dir() -> Path:
    """The demo's data folder: ``<default data folder>/demo``."""
    from clipsearch.indexer.settings import default_data_dir

    return Path(default_data_dir()) / "demo"


def offline_hint(images: list[Path] | None = None) -> str:
    """What to do when a model cannot be downloaded: the demo's model (trained here, offline)
    searches a folder of one's own right now; said with the exact ``--model`` to pass."""
    model_dir = demo_dir() / "model"
    folders = " ".join(shlex.quote(str(f)) for f in images or []) or "DIR"
    ready = (model_dir / "model.safetensors").is_file()
    return (
        "To search your own folder now without a download, use the demo's model (it knows "
        "shapes and colours, not the world: rough results): "
        + ("" if ready else "run `clipsearch demo --no-serve` once, then ")
        + f"`clipsearch serve --images {folders} --model {shlex.quote(str(model_dir))}`; "
        "switch later with `clipsearch reindex --model ViT-B-32`."
    )
