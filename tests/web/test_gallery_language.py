"""The gallery's query-language picker, in Debian's Chromium: shown for a language-aware model
(its own small ``clipsearch serve`` with the tiny NLLB-SigLIP of tests/model/fixtures), labelled
and reachable from the keyboard, sending `lang` with text searches and "more like this, but
with text", remembered in the address bar like the filters, starting from the browser's language
when it maps to one code; and absent for the shared server's CLIP (tests/web/conftest.py)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from playwright.sync_api import expect
from test_gallery import tile_names, wait_for_grid

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
NLLB_DIR = REPO / "tests" / "model" / "fixtures" / "nllb_siglip"
TOKEN = "gallery-lang-token-5b8e0c2d71"
N_IMAGES = 8


@pytest.fixture(scope="module")
def nllb_server(tmp_path_factory: pytest.TempPathFactory, start_serve: Any) -> Iterator[str]:
    from PIL import Image, ImageDraw

    base = tmp_path_factory.mktemp("gallery-lang")
    photos = base / "photos"
    photos.mkdir()
    for i in range(N_IMAGES):
        img = Image.new("RGB", (160, 120), (30 * i, 200 - 20 * i, 90 + 15 * i))
        ImageDraw.Draw(img).ellipse((20 + 8 * i, 20, 90 + 8 * i, 100), fill=(250, 240, 230))
        img.save(photos / f"photo-{i}.png")
    env = dict(
        CLIPSEARCH_API_TOKEN=TOKEN,
        CLIPSEARCH_DEVICE="cpu",
        CLIPSEARCH_GALLERY_MIN_RELEVANCE="0",
        OMP_NUM_THREADS="1",
    )
    args = ["--images", str(photos), "--model", str(NLLB_DIR), "--data-dir", str(base / "data")]
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def all_searchable(url: str) -> bool:
        # searchable, not only catalogued: the served index follows the catalog
        r = httpx.get(f"{url}/api/search", params={"q": "a photo", "k": 50}, headers=headers)
        with contextlib.suppress(ValueError):
            return r.status_code == 200 and len(r.json().get("results", [])) == N_IMAGES
        return False

    ready = [("waiting for the images to become searchable", all_searchable)]
    with start_serve(args, env, base / "serve.log", ready) as url:
        yield url


def _api(url: str, path: str, **params: Any) -> Any:
    r = httpx.get(
        url + path, params=params, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    assert r.status_code == 200, r.text
    return r.json()


@contextlib.contextmanager
def _tab(browser: Any, url: str, **context_args: Any) -> Iterator[Any]:
    context = browser.new_context(
        base_url=url, viewport={"width": 1280, "height": 800}, **context_args
    )
    assert context.request.post("/api/session", data={"token": TOKEN}).ok
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, errors


def _is_search(request: Any) -> bool:
    return urlparse(request.url).path == "/api/v1/search"


def _lang_of(request: Any) -> str | None:
    """The `lang` a search request carried (query string or JSON body)."""
    if request.method == "GET":
        return (parse_qs(urlparse(request.url).query).get("lang") or [None])[0]
    return json.loads(request.post_data or "{}").get("lang")


def _url_lang(page: Any) -> str | None:
    return (parse_qs(urlparse(page.url).query).get("lang") or [None])[0]


def test_the_picker_sends_the_chosen_language_and_links_remember_it(
    browser: Any, nllb_server: str
) -> None:
    with _tab(browser, nllb_server, locale="en-US") as page:
        with page.expect_request(_is_search) as first:
            page.goto("/?q=" + "un chien")
        wait_for_grid(page)
        assert _lang_of(first.value) is None  # the model's default needs no parameter
        picker = page.get_by_label("Language of your query")
        expect(picker).to_be_visible()
        expect(picker).to_have_value("eng_Latn")
        expect(picker.locator("option")).to_have_count(202)
        expect(picker.locator('option[value="fra_Latn"]')).to_have_text("French")
        assert _url_lang(page) is None

        # keyboard: the picker comes right after the search box
        page.locator("#q").focus()
        page.keyboard.press("Tab")
        expect(picker).to_be_focused()
        with page.expect_request(_is_search) as french:
            picker.select_option("fra_Latn")
        assert _lang_of(french.value) == "fra_Latn"
        wait_for_grid(page)
        expect(page.locator("#status")).to_contain_text("in French")
        assert _url_lang(page) == "fra_Latn"
        # what the page shows is what the API answers for a French query
        answer = _api(nllb_server, "/api/search", q="un chien", lang="fra_Latn", k=40)
        assert answer["query"]["lang"] == "fra_Latn"
        assert tile_names(page) == [Path(x["path"]).name for x in answer["results"]]

        # reloaded (or shared), the link keeps the language
        with page.expect_request(_is_search) as again:
            page.reload()
        assert _lang_of(again.value) == "fra_Latn"
        expect(picker).to_have_value("fra_Latn")
        # back: the English search, and the picker with it
        page.go_back()
        expect(picker).to_have_value("eng_Latn")
        assert _url_lang(page) is None

        # a code this model does not know, in a link: the default, no error
        with page.expect_request(_is_search) as unknown:
            page.goto("/?q=chien&lang=xyz_Abcd")
        assert _lang_of(unknown.value) is None
        wait_for_grid(page)
        expect(picker).to_have_value("eng_Latn")
        expect(page.locator("#error")).to_be_hidden()


def test_more_like_this_with_text_is_read_in_the_chosen_language(
    browser: Any, nllb_server: str
) -> None:
    first_id = _api(nllb_server, "/api/images", limit=1)["items"][0]["id"]
    with _tab(browser, nllb_server, locale="en-US") as page:
        with page.expect_request(_is_search) as similar:
            page.goto(f"/?like={first_id}&with=au+coucher+du+soleil&lang=fra_Latn")
        assert similar.value.method == "POST"
        assert _lang_of(similar.value) == "fra_Latn"
        expect(page.get_by_label("Language of your query")).to_have_value("fra_Latn")


def test_a_french_browser_starts_in_french(browser: Any, nllb_server: str) -> None:
    with _tab(browser, nllb_server, locale="fr-FR") as page:
        with page.expect_request(_is_search) as first:
            page.goto("/?q=chien")
        assert _lang_of(first.value) == "fra_Latn"
        picker = page.get_by_label("Language of your query")
        expect(picker).to_have_value("fra_Latn")
        wait_for_grid(page)
        assert _url_lang(page) == "fra_Latn"  # a link from here says so
        # a link's language wins over the browser's; English chosen here is remembered too
        with page.expect_request(_is_search) as german:
            page.goto("/?q=Hund&lang=deu_Latn")
        assert _lang_of(german.value) == "deu_Latn"
        expect(picker).to_have_value("deu_Latn")
        with page.expect_request(_is_search) as english:
            picker.select_option("eng_Latn")
        assert _lang_of(english.value) is None  # the model's default
        assert _url_lang(page) == "eng_Latn"  # kept, or a reload would start in French again


def test_no_picker_for_a_model_without_language_codes(page: Any, live_server: Any) -> None:
    assert live_server.api("/api/search/languages").json()["language_aware"] is False
    with page.expect_request(_is_search) as first:
        page.goto("/?q=a+photo&lang=fra_Latn")
    assert _lang_of(first.value) is None  # not sent: this model takes none
    wait_for_grid(page)
    expect(page.locator("#lang-picker")).to_be_hidden()
    assert _url_lang(page) is None


def test_the_picker_fits_a_phone(browser: Any, nllb_server: str) -> None:
    args = {"device_scale_factor": 1, "is_mobile": True, "has_touch": True}
    context = browser.new_context(
        base_url=nllb_server, viewport={"width": 390, "height": 844}, locale="en-US", **args
    )
    try:
        assert context.request.post("/api/session", data={"token": TOKEN}).ok
        page = context.new_page()
        page.goto("/?q=chien&lang=zho_Hant")  # one of the longer names
        wait_for_grid(page)
        picker = page.get_by_label("Language of your query")
        expect(picker).to_be_visible()
        expect(picker).to_have_value("zho_Hant")
        box, search = picker.bounding_box(), page.locator("#q").bounding_box()
        assert box is not None and search is not None
        assert box["x"] + box["width"] <= 390 and search["width"] >= 120  # room left to type
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        context.close()
