"""The model layer's exception family.

Everything that goes wrong inside ``model/`` because of what a user gave it (a path, a file, a
name, an input of the wrong shape) is raised as a :class:`ModelError`, with a message that names the
thing and says what was expected, so the service can show it as is.
"""

from __future__ import annotations


class ModelError(Exception):
    """Base class of every error the model layer raises on purpose."""


class CheckpointError(ModelError):
    """A checkpoint is missing, unreadable, of an unknown format, or of an unknown architecture."""


class DownloadError(ModelError):
    """Weights could not be fetched or verified (network, hash mismatch, no space)."""
