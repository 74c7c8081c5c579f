"""Relevance, the relevance cut, date sort and mixed text/image terms through the REST API, on a
real Library (SQLite) with a tiny random model: the mechanics. The calibration's meaning is
proved with the demo's trained model in test_relevance_demo.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from svc_testlib import ingest_now, png_bytes, write_dated_jpeg, write_images

from clipsearch.service.app import build_library, create_app
from clipsearch.service.settings import Settings

NAMES = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (240, 220, 20),
    "white": (250, 250, 250),
    "black": (5, 5, 5),
    "purple": (150, 40, 190),
    "orange": (250, 140, 20),
}


class Env:
    def __init__(self, client: TestClient, lib: Any, files: dict[str, Path]) -> None:
        self.client = client
        self.lib = lib
        self.files = files
        items, _ = lib.list_images(limit=100)
        by_path = {i.path: i.id for i in items}
        self.ids = {name: by_path[str(p.resolve())] for name, p in files.items()}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("terms")
    root = base / "photos"
    files = {p.stem: p for p in write_images(root, NAMES)}
    for day, colour in (("01", (90, 60, 30)), ("15", (30, 90, 60)), ("28", (60, 30, 90))):
        name = f"dated-{day}"
        files[name] = write_dated_jpeg(root / f"{name}.jpg", f"2021:06:{day} 12:00:00", colour)
    settings = Settings(
        data_dir=base / "data", model=str(tiny_model_dir), allowed_roots=[root], batch_window_ms=0.5
    )
    lib = build_library(settings)
    job = ingest_now(lib, root)
    assert job.state == "done" and job.done == len(files), job
    with TestClient(create_app(settings, library=lib)) as client:
        yield Env(client, lib, files)
    lib.close()


def _ids(r: Any) -> list[int]:
    assert r.status_code == 200, r.text
    return [x["id"] for x in r.json()["results"]]


def test_every_hit_has_a_relevance_that_grows_with_its_score(env: Env) -> None:
    params = {"q": "a red picture", "k": 11, "mode": "semantic", "min_relevance": 0}
    r = env.client.get("/api/search", params=params)
    results = r.json()["results"]
    assert len(results) == 11
    rel = [x["relevance"] for x in results]
    scores = [x["score"] for x in results]
    assert all(0.0 <= v <= 1.0 for v in rel)
    assert scores == sorted(scores, reverse=True)
    assert rel == sorted(rel, reverse=True)  # same query: relevance is monotone in the score
    assert len(set(rel)) > 1


def test_min_relevance_cuts_a_prefix_and_says_how_many_it_hid(env: Env) -> None:
    full = env.client.get(
        "/api/search",
        params={"q": "a red picture", "k": 11, "mode": "semantic", "min_relevance": 0},
    ).json()["results"]
    cut_at = (full[3]["relevance"] + full[4]["relevance"]) / 2
    r = env.client.get(
        "/api/search",
        params={"q": "a red picture", "k": 11, "min_relevance": cut_at, "mode": "semantic"},
    )
    body = r.json()
    assert [x["id"] for x in body["results"]] == [x["id"] for x in full[:4]]
    assert all(x["relevance"] >= cut_at for x in body["results"])
    assert body["hidden"] == 7 and body["hidden_more"] is False
    assert body["query"]["min_relevance"] == cut_at
    # nothing hidden while the page is full of results above the cut
    r = env.client.get(
        "/api/search",
        params={"q": "a red picture", "k": 2, "min_relevance": cut_at, "mode": "semantic"},
    )
    assert len(r.json()["results"]) == 2 and r.json()["hidden"] is None
    # min_relevance 1 leaves nothing, and says so
    r = env.client.get(
        "/api/search", params={"q": "a red picture", "min_relevance": 1, "mode": "semantic"}
    )
    assert r.json()["results"] == [] and r.json()["hidden"] == 11


def test_calibration_is_measured_once_per_index(env: Env) -> None:
    first = env.lib.calibration()
    second = env.lib.calibration()
    assert first is second
    d = first.describe()
    assert d["text_background"]["top"] >= d["text_background"]["mean"]
    assert d["default_min_relevance"] == 0.5


def test_sort_by_capture_date_pages_one_fixed_result_set(env: Env) -> None:
    params = {"q": "a photo", "min_relevance": 0, "sort": "date_desc", "k": 4, "mode": "semantic"}
    first = _ids(env.client.get("/api/search", params=params))
    second = _ids(env.client.get("/api/search", params={**params, "offset": 4}))
    third = _ids(env.client.get("/api/search", params={**params, "offset": 8}))
    everything = first + second + third
    assert len(everything) == len(env.files) == len(set(everything))
    dated = [env.ids[f"dated-{d}"] for d in ("28", "15", "01")]
    assert first[:3] == dated  # newest first, the undated after them
    asc = _ids(env.client.get("/api/search", params={**params, "sort": "date_asc", "k": 11}))
    assert asc[:3] == dated[::-1]
    # POST takes the same sort, and the similar/image searches too
    r = env.client.post(
        "/api/search",
        json={
            "text": "a photo",
            "min_relevance": 0,
            "sort": "date_asc",
            "k": 3,
            "mode": "semantic",
        },
    )
    assert _ids(r) == dated[::-1]
    r = env.client.get(
        f"/api/images/{env.ids['red']}/similar",
        params={"min_relevance": 0, "sort": "date_desc", "k": 3},
    )
    assert _ids(r) == dated
    r = env.client.get("/api/search", params={"q": "x", "sort": "newest"})
    assert r.status_code == 422 and "sort" in r.json()["detail"]


def _rank(ids: list[int], target: int) -> int:
    return ids.index(target) if target in ids else len(ids)


def test_an_image_term_pulls_results_toward_that_image(env: Env) -> None:
    lib = env.lib
    red = env.ids["red"]
    neighbours = [int(h.id) for h in lib.search(lib.image_vector(red), k=4, exclude=[red])]
    base = _ids(
        env.client.post(
            "/api/search",
            json={"text": "a drawing", "k": 11, "mode": "semantic", "min_relevance": 0},
        )
    )
    mixed_r = env.client.post(
        "/api/search",
        json={
            "terms": [{"text": "a drawing"}, {"image_id": red, "weight": 2}],
            "k": 11,
            "min_relevance": 0,
        },
    )
    mixed = _ids(mixed_r)
    assert red not in mixed  # the example itself is left out
    assert sum(_rank(mixed, n) for n in neighbours) < sum(_rank(base, n) for n in neighbours)
    assert mixed[0] == neighbours[0]
    terms = mixed_r.json()["query"]["terms"]
    assert terms == [{"text": "a drawing", "weight": 1.0}, {"image_id": red, "weight": 2.0}]


def test_a_negative_text_term_lowers_what_matches_it(env: Env) -> None:
    lib = env.lib
    q = "a bright picture"
    v_red = lib.model.embed_texts(["red"])[0]
    base = env.client.post(
        "/api/search", json={"terms": [{"text": q}], "k": 11, "min_relevance": 0}
    ).json()
    neg = env.client.post(
        "/api/search",
        json={"terms": [{"text": q}, {"text": "red", "weight": -1}], "k": 11, "min_relevance": 0},
    ).json()
    # the images most like "red" move down the ranking
    vecs = {i: lib.image_vector(i) for i in env.ids.values()}
    reddest = sorted(vecs, key=lambda i: -float(np.dot(vecs[i], v_red)))[:3]
    base_ids = [x["id"] for x in base["results"]]
    neg_ids = [x["id"] for x in neg["results"]]
    assert sum(_rank(neg_ids, i) for i in reddest) > sum(_rank(base_ids, i) for i in reddest)


def test_terms_and_text_combine_and_match_the_text_search(env: Env) -> None:
    plain = _ids(
        env.client.get(
            "/api/search",
            params={"q": "sky -grass", "k": 11, "mode": "semantic", "min_relevance": 0},
        )
    )
    same = _ids(
        env.client.post(
            "/api/search",
            json={
                "terms": [{"text": "sky"}, {"text": "grass", "weight": -0.5}],
                "k": 11,
                "min_relevance": 0,
            },
        )
    )
    assert same == plain
    both = _ids(
        env.client.post(
            "/api/search",
            json={
                "text": "sky",
                "terms": [{"text": "grass", "weight": -0.5}],
                "k": 11,
                "min_relevance": 0,
            },
        )
    )
    assert both == plain


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"terms": [{"image_id": 987654}]}, 404, "987654"),
        ({"terms": []}, 422, "text"),
        ({}, 422, "text"),
        ({"terms": [{"text": "a"}] * 1000}, 422, "64"),
        ({"terms": [{"text": "a", "weight": "heavy"}]}, 422, "weight"),
        ({"terms": [{"text": "a", "weight": 0}]}, 422, "0"),
        ({"terms": [{"text": "a", "weight": 1e9}]}, 422, "weight"),
        ({"terms": [{"text": "a", "image_id": 1}]}, 422, "exactly one"),
        ({"terms": [{"upload": 0}]}, 422, "upload"),
        ({"terms": [{"text": "   "}]}, 422, "empty"),
        ({"terms": [{"text": "red"}, {"text": "red", "weight": -1}]}, 400, "cancel"),
        ({"terms": [{"text": "a", "colour": "red"}]}, 422, "colour"),
    ],
)
def test_hostile_terms_get_a_clear_4xx(
    env: Env, body: dict[str, Any], status: int, words: str
) -> None:
    r = env.client.post("/api/search", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_an_uploaded_image_joins_text_terms(env: Env) -> None:
    red = png_bytes((48, 48), NAMES["red"])
    alone = env.client.post(
        "/api/search/image",
        files={"file": ("q.png", red, "image/png")},
        params={"k": 11, "min_relevance": 0},
    )
    mixed = env.client.post(
        "/api/search/image",
        files={"file": ("q.png", red, "image/png")},
        data={"terms": '[{"upload": 0, "weight": 1}, {"text": "blue", "weight": -1}]'},
        params={"k": 11, "min_relevance": 0},
    )
    assert mixed.status_code == 200, mixed.text
    terms = mixed.json()["query"]["terms"]
    assert {"text": "blue", "weight": -1.0} in terms and {"upload": 0, "weight": 1.0} in terms
    assert mixed.json()["query"]["uploads"] == ["q.png"]
    assert _ids(mixed) != _ids(alone)
    bad = env.client.post(
        "/api/search/image",
        files={"file": ("q.png", red, "image/png")},
        data={"terms": "not json"},
    )
    assert bad.status_code == 422 and "terms" in bad.json()["detail"]


def test_cli_search_mixes_terms_and_prints_relevance(
    env: Env, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clipsearch.service.cli import main

    common = ["--data-dir", str(env.lib.data_dir), "--model", str(tiny_model_dir)]
    red = env.ids["red"]
    cut0 = ["--min-relevance", "0"]  # every result, as the API below
    assert (
        main(
            ["search", "a drawing", "--like", str(red), "--not", "blue", "-k", "5", *cut0, *common]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5
    want = _ids(
        env.client.post(
            "/api/search",
            json={
                "terms": [
                    {"text": "a drawing"},
                    {"text": "blue", "weight": -0.5},
                    {"image_id": red},
                ],
                "k": 5,
                "min_relevance": 0,
            },
        )
    )
    for rank, (line, image_id) in enumerate(zip(lines, want, strict=True), 1):
        fields = line.split()
        assert fields[0] == str(rank) and fields[3] == f"#{image_id}"
        assert 0.0 <= float(fields[2]) <= 1.0  # the relevance column
    assert f"#{red} " not in "\n".join(lines)
    # a cut nothing reaches says what it hid; an unknown image is a clear error
    assert main(["search", "a drawing", "--min-relevance", "1", *common]) == 0
    assert "weaker hidden by --min-relevance" in capsys.readouterr().out
    assert main(["search", "x", "--like", "987654", *common]) != 0
    assert "987654" in capsys.readouterr().err
    assert main(["search", "--min-relevance", "2", "x", *common]) != 0
    assert "between 0 and 1" in capsys.readouterr().err
