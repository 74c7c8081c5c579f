"""The type of parsed JSON, named once for every layer (model, indexer, service).

``JSON`` is what :func:`json.loads` can return; ``JSONObject`` a JSON object. A function that
only reads a document takes ``Mapping[str, object]`` (any object-shaped value fits, TypedDicts
included) and narrows with ``isinstance`` before use.
"""

from __future__ import annotations

from typing import TypeAlias

JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"
JSONObject: TypeAlias = "dict[str, JSON]"
