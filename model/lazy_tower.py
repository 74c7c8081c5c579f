"""An image tower read from its checkpoint the first time something needs it.

A text query needs only the text tower. ``model.load(spec, image_tower="on_demand")`` builds a
standard CLIP with its text tower loaded and ``visual`` a :class:`LazyTower`: nothing of the image
tower is in memory (a ViT-B/32's is 88 M parameters, 350 MB in float32) until an image is
embedded or the tower is otherwise touched; then the tower is read from the same checkpoint,
moved to the model's device and dtype, and put in place of the stand-in (once, under a lock).
The numbers are those of a model loaded whole.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

import torch
from torch import nn


class LazyTower(nn.Module):
    """Stands in for ``owner.visual`` until first use; holds no parameters meanwhile."""

    def __init__(self, owner: nn.Module, load: Callable[[], nn.Module]) -> None:
        super().__init__()
        # Plain attributes (not submodules): the owner must not become a child of its own child.
        self.__dict__["_owner"] = weakref.ref(owner)
        self.__dict__["_load"] = load
        self.__dict__["_lock"] = threading.Lock()
        self.__dict__["_tower"] = None

    @property
    def loaded(self) -> bool:
        return self.__dict__["_tower"] is not None

    def materialize(self) -> nn.Module:
        """The real tower: read, placed like the owner's text tower, and put on the owner."""
        with self.__dict__["_lock"]:
            tower: nn.Module | None = self.__dict__["_tower"]
            if tower is None:
                owner = self.__dict__["_owner"]()
                tower = self.__dict__["_load"]()
                if owner is not None:
                    probe = owner.get_parameter("token_embedding.weight")  # the text tower's place
                    tower = tower.to(device=probe.device, dtype=probe.dtype)
                    tower.train(owner.training)
                    setattr(owner, "visual", tower)  # noqa: B010 - nn.Module registers it
                    channels_last = getattr(owner, "use_channels_last", None)
                    if callable(channels_last):
                        channels_last()  # a ResNet tower's layout, as a whole load leaves it
                self.__dict__["_tower"] = tower
            return tower

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        return self.materialize()(*args, **kwargs)

    def __getattr__(self, name: str) -> torch.Tensor | nn.Module:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.materialize(), name)

    def extra_repr(self) -> str:
        return "loaded" if self.loaded else "not loaded yet (read on first use)"
