"""How well a result matches, in words (indexer.relevance.relevance_band): decided once in the
domain from the calibrated relevance, and what the API gives every search hit as `band`."""

from __future__ import annotations

import math

from clipsearch.indexer.relevance import relevance_band
from clipsearch.service.schemas import SearchHit


def test_bands_follow_the_background_deviations() -> None:
    # 0.5 is the luckiest meaningless query; 0.7 and 0.9 are 0.52 and 1.28 background deviations
    # above it
    assert relevance_band(0.5) == "weak"
    assert relevance_band(0.69) == "weak"
    assert relevance_band(0.7) == "fair"
    assert relevance_band(0.89) == "fair"
    assert relevance_band(0.9) == "strong"
    assert relevance_band(0.97) == "strong"
    assert relevance_band(1.0) == "strong"
    assert relevance_band(0.0) == "weak"
    assert relevance_band(None) is None and relevance_band(math.nan) is None


def test_every_search_hit_carries_its_band() -> None:
    hit = SearchHit(
        id=1, score=0.31, path="/p/a.jpg", thumbnail_url="t", file_url="f", preview_url="p"
    )
    assert hit.model_dump()["band"] is None  # no calibrated relevance: no words for it
    hit.relevance = 0.99
    assert hit.model_dump()["band"] == "strong"
    assert "band" in SearchHit.model_json_schema(mode="serialization")["properties"]
