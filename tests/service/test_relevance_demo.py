"""The relevance that means something, proved with the demo's trained model (issue 13).

The demo's recipe (service.demo.prepare_demo: the synthetic shapes set, the small CLIP, the
background pairs) is trained here once for the module at a reduced size (fewer images and steps
than `clipsearch demo`, same everything else), its images ingested into a real library, and the
API asked:

* meaningless queries (keyboard mashes, none of them the background's strings) find nothing at
  the gallery's default threshold, although their raw scores are high;
* the documented example queries (README, `clipsearch demo`) keep their correct results above it;
* mixed terms: an image term moves results toward that image, a negative text term lowers what
  matches it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from svc_testlib import ingest_now

from clipsearch.indexer.relevance import DEFAULT_MIN_RELEVANCE, background_texts
from clipsearch.model.finetune.synthetic import read_manifest
from clipsearch.service.app import build_library, create_app
from clipsearch.service.demo import DEMO_IMAGES, DEMO_QUERIES, DEMO_STEPS, prepare_demo
from clipsearch.service.settings import Settings

# training the demo's model takes minutes on a loaded CPU: more than the suite's default timeout
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

IMAGES = DEMO_IMAGES  # the demo's own model: a smaller one ranks "a red circle" too poorly
STEPS = DEMO_STEPS
NONSENSE = (
    "zzzz qqqq",
    "xkcd blorf",
    "asdfgh jkl",
    "qwerty uiop",
    "lorem ipsum dolor",
    "mmmm",
    "vbnm zxcv",
    "plokij uhygt",
)
README_EXAMPLES = ("a red circle", "two blue squares")  # README, "Run (one command)"
WANTED = {  # what a correct result of each documented example shows
    "a red circle": {"colour": "red", "shape": "circle"},
    "two blue squares": {"colour": "blue", "shape": "square", "count": 2},
    "two red circles": {"colour": "red", "shape": "circle", "count": 2},
    "a blue square on the left": {"colour": "blue", "shape": "square", "position": "left"},
    "three yellow triangles": {"colour": "yellow", "shape": "triangle", "count": 3},
    "a green cross at the top": {"colour": "green", "shape": "cross", "position": "top"},
}


class Demo:
    def __init__(self, client: TestClient, lib: Any, manifest: dict[str, dict[str, Any]]) -> None:
        self.client = client
        self.lib = lib
        self.attrs: dict[int, dict[str, Any]] = {}
        after = 0
        while True:
            items, _ = lib.list_images(limit=500, after=after)
            self.attrs.update({i.id: manifest[Path(i.path).name] for i in items})
            if len(items) < 500:
                break
            after = items[-1].id

    def search(self, q: str, **params: Any) -> dict[str, Any]:
        r = self.client.get("/api/search", params={"q": q, "mode": "semantic", **params})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def correct(self, image_id: int, wanted: dict[str, Any]) -> bool:
        a = self.attrs[image_id]
        return all(a.get(k) == v for k, v in wanted.items())


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    base = tmp_path_factory.mktemp("demo")
    # CLIPSEARCH_TEST_DEMO_DIR keeps the trained demo between runs (prepare_demo reuses a model
    # trained with the same settings, and retrains when they differ)
    keep = os.environ.get("CLIPSEARCH_TEST_DEMO_DIR")
    demo_dir = Path(keep) if keep else base / "demo"
    assets = prepare_demo(demo_dir, images=IMAGES, steps=STEPS, progress=False)
    settings = Settings(
        data_dir=base / "data",
        model=str(assets.model),
        allowed_roots=[assets.images],
        batch_window_ms=0.5,
    )
    lib = build_library(settings)
    job = ingest_now(lib, assets.images)
    assert job.state == "done" and job.done == IMAGES, job
    with TestClient(create_app(settings, library=lib)) as client:
        yield Demo(client, lib, read_manifest(assets.images))
    lib.close()


def test_the_test_queries_are_not_the_background() -> None:
    assert not set(NONSENSE) & set(background_texts())
    assert set(WANTED) >= set(README_EXAMPLES) | set(DEMO_QUERIES)


def test_nonsense_finds_nothing_above_the_default_threshold(demo: Demo) -> None:
    for q in NONSENSE:
        raw = demo.search(q, k=20, min_relevance=0)["results"]
        assert len(raw) == 20  # without a cut every query has "results" ...
        cut = demo.search(q, k=20, min_relevance=DEFAULT_MIN_RELEVANCE)
        assert cut["results"] == [], (q, raw[0])  # ... with it, a meaningless one has none
        assert cut["hidden"] == 100 and cut["hidden_more"] is True  # "100+ weaker results"
        assert max(x["relevance"] for x in raw) < DEFAULT_MIN_RELEVANCE
        default = demo.search(q, k=20)  # the default cut is that cut, for every door
        assert default["results"] == [] and default["min_relevance"] == DEFAULT_MIN_RELEVANCE


def test_documented_examples_keep_their_correct_results(demo: Demo) -> None:
    """Each example keeps results above the cut, and the first right picture of its ranking is
    among them. (Right pictures further down can fall below it: "three yellow triangles" keeps 1
    of the 4 in its top 10 with this small model; they score 0.45 to 0.57.)"""
    for q, wanted in WANTED.items():
        raw = demo.search(q, k=10, min_relevance=0)["results"]
        shown = demo.search(q, k=100, min_relevance=DEFAULT_MIN_RELEVANCE)["results"]
        shown_ids = {x["id"] for x in shown}
        correct_top = [x["id"] for x in raw if demo.correct(x["id"], wanted)]
        assert correct_top, f"{q!r}: the model finds no correct image in its top 10"
        assert correct_top[0] in shown_ids, (q, [(x["id"], x["relevance"]) for x in raw])
        assert all(x["relevance"] >= DEFAULT_MIN_RELEVANCE for x in shown)


def _mean_rank(ids: list[int], targets: list[int]) -> float:
    return sum(ids.index(t) if t in ids else len(ids) for t in targets) / len(targets)


def test_an_image_term_moves_results_toward_that_image(demo: Demo) -> None:
    lib = demo.lib
    # an image of two blue squares, searched for with the words "a red circle"
    example = next(
        i for i, a in demo.attrs.items() if a.get("colour") == "blue" and a.get("shape") == "square"
    )
    neighbours = [h.id for h in lib.search(lib.image_vector(example), k=10, exclude=[example])]
    text_only = [x["id"] for x in demo.search("a red circle", k=200, min_relevance=0)["results"]]
    r = demo.client.post(
        "/api/search",
        json={
            "terms": [{"text": "a red circle"}, {"image_id": example}],
            "k": 200,
            "min_relevance": 0,
        },
    )
    assert r.status_code == 200, r.text
    mixed = [x["id"] for x in r.json()["results"]]
    assert example not in mixed
    assert _mean_rank(mixed, neighbours) < _mean_rank(text_only, neighbours) / 2


def test_a_negative_text_term_lowers_the_images_it_matches(demo: Demo) -> None:
    plain = demo.client.post(
        "/api/search", json={"terms": [{"text": "circles"}], "k": 40, "min_relevance": 0}
    )
    minus = demo.client.post(
        "/api/search",
        json={
            "terms": [{"text": "circles"}, {"text": "red", "weight": -1}],
            "k": 40,
            "min_relevance": 0,
        },
    )
    assert plain.status_code == minus.status_code == 200
    red = {"colour": "red"}
    before = sum(demo.correct(x["id"], red) for x in plain.json()["results"])
    after = sum(demo.correct(x["id"], red) for x in minus.json()["results"])
    assert after < before / 2, (before, after)
    circles = {"shape": "circle"}
    # still a search for circles
    assert sum(demo.correct(x["id"], circles) for x in minus.json()["results"]) >= 15
