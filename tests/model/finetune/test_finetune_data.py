"""Reading image/caption pairs (folders, CSV, JSONL), the split, and the synthetic set."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from clipsearch.model.finetune import FinetuneError
from clipsearch.model.finetune.data import DataError, load_pairs, split_pairs, trim_tokens
from clipsearch.model.finetune.synthetic import (
    SyntheticConfig,
    SyntheticError,
    generate,
    read_manifest,
    write_folder,
)


def _png(path: Path, colour: tuple[int, int, int] = (200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 16), colour).save(path)
    return path


def test_folder_with_sidecars_reports_and_skips_bad_files(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("  a red\n square \x00 ", encoding="utf-8")
    _png(tmp_path / "sub" / "b.png")
    (tmp_path / "sub" / "b.txt").write_bytes(b"caf\xe9 caption")  # not UTF-8: still read
    _png(tmp_path / "nocaption.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (tmp_path / "broken.txt").write_text("a broken file")
    (tmp_path / "empty.png").write_bytes(_png(tmp_path / "x" / "e.png").read_bytes())
    (tmp_path / "empty.txt").write_text("   \n")
    _png(tmp_path / ".hidden" / "h.png")
    (tmp_path / ".hidden" / "h.txt").write_text("hidden")
    pairs = load_pairs(tmp_path)
    by_key = {p.key: p for p in pairs.pairs}
    assert set(by_key) == {"a.png", "sub/b.png"}
    assert by_key["a.png"].caption == "a red square"
    assert by_key["sub/b.png"].caption.startswith("caf")
    reasons = {pr.where: pr.reason for pr in pairs.problems}
    assert "no caption" in reasons["nocaption.png"]
    assert "cannot be decoded" in reasons["broken.jpg"]
    assert "no caption" in reasons["empty.png"]
    assert "x/e.png" in reasons  # a sub-folder image without a sidecar


def test_csv_with_header_relative_paths_and_bad_rows(tmp_path: Path) -> None:
    _png(tmp_path / "img" / "one.png")
    _png(tmp_path / "img" / "two.png", (0, 0, 255))
    abs_png = _png(tmp_path / "elsewhere" / "three.png")
    (tmp_path / "pairs.csv").write_text(
        "caption,filepath\n"
        '"a red, square thing",img/one.png\n'
        "a blue thing,img/two.png\n"
        "missing file,img/nope.png\n"
        "not an image name,../../etc/passwd\n"
        f"absolute path,{abs_png}\n"
        "only one column\n"
        "duplicate,img/one.png\n",
        encoding="utf-8",
    )
    pairs = load_pairs(tmp_path / "pairs.csv")
    assert [(p.key, p.caption) for p in pairs.pairs] == [
        ("img/one.png", "a red, square thing"),
        ("img/two.png", "a blue thing"),
        (str(abs_png), "absolute path"),
    ]
    reasons = [pr.reason for pr in pairs.problems]
    assert len(reasons) == 4
    assert any("not found" in r for r in reasons)
    assert any("not an image file name" in r for r in reasons)
    assert any("malformed row" in r for r in reasons)
    assert any("listed twice" in r for r in reasons)


def test_jsonl_rows(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    lines = [
        json.dumps({"image": "a.png", "text": "a red square"}),
        "{not json",
        json.dumps(["a list"]),
        json.dumps({"path": "a.png"}),
    ]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    pairs = load_pairs(tmp_path / "pairs.jsonl")
    assert [(p.key, p.caption) for p in pairs.pairs] == [("a.png", "a red square")]
    assert len(pairs.problems) == 3


def test_sources_without_any_usable_pair_raise_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot be read"):
        load_pairs(tmp_path / "absent")
    (tmp_path / "notes.md").write_text("hi")
    with pytest.raises(DataError, match="is not a folder of images"):
        load_pairs(tmp_path / "notes.md")
    (tmp_path / "bad.csv").write_text("path,caption\nnope.png,hello\n")
    with pytest.raises(DataError, match=r"no usable image/caption pair.*not found"):
        load_pairs(tmp_path / "bad.csv")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_listed_as_an_image_is_skipped_not_opened(tmp_path: Path) -> None:
    _png(tmp_path / "ok.png")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "pairs.csv").write_text("path,caption\nok.png,fine\npipe.png,trap\n")
    pairs = load_pairs(tmp_path / "pairs.csv")
    assert [p.key for p in pairs.pairs] == ["ok.png"]
    assert "not a regular file" in pairs.problems[0].reason


def test_split_is_reproducible_order_independent_and_stable_when_data_grows(tmp_path: Path) -> None:
    from clipsearch.model.finetune.data import Pair

    pairs = [Pair(tmp_path / f"{i}.png", f"caption {i}", f"{i}.png") for i in range(1000)]
    train, val = split_pairs(pairs, 0.2, seed=3)
    assert 150 < len(val) < 250 and len(train) + len(val) == 1000
    _, val2 = split_pairs(list(reversed(pairs)), 0.2, seed=3)
    assert {p.key for p in val2} == {p.key for p in val}
    grown = pairs + [Pair(tmp_path / f"n{i}.png", "new", f"n{i}.png") for i in range(100)]
    _, val3 = split_pairs(grown, 0.2, seed=3)
    assert {p.key for p in val} <= {p.key for p in val3}
    _, other = split_pairs(pairs, 0.2, seed=4)
    assert {p.key for p in other} != {p.key for p in val}
    # Tiny sets still get a validation pair.
    _, val_small = split_pairs(pairs[:3], 0.01, seed=0)
    assert len(val_small) == 1
    with pytest.raises(FinetuneError):
        split_pairs(pairs, 1.5)


def test_trim_tokens_keeps_the_end_token() -> None:
    import torch

    tokens = torch.zeros(2, 77, dtype=torch.long)
    tokens[0, :4] = torch.tensor([49406, 10, 11, 49407])
    tokens[1, :3] = torch.tensor([49406, 12, 49407])
    trimmed = trim_tokens(tokens)
    assert trimmed.shape == (2, 4)
    assert trimmed[0, 3] == 49407 and trimmed[1, 2] == 49407


def test_synthetic_set_is_deterministic_by_seed_and_captions_match_attributes() -> None:
    cfg = SyntheticConfig(
        attributes=("colour", "shape", "count", "position"), image_size=48, seed=7
    )
    a, b = list(generate(cfg, 20)), list(generate(cfg, 20))
    assert [x.caption for x in a] == [x.caption for x in b]
    assert all(x.image.tobytes() == y.image.tobytes() for x, y in zip(a, b, strict=True))
    # Item i does not depend on how many items were asked for, or where generation started.
    assert next(iter(generate(cfg, 1, start=13))).caption == a[13].caption
    other = list(generate(SyntheticConfig(**{**cfg.__dict__, "seed": 8}), 20))
    assert [x.caption for x in other] != [x.caption for x in a]
    number = {1: "one", 2: "two", 3: "three"}
    for item in a:
        attrs = item.attributes
        assert str(attrs["colour"]) in item.caption
        assert number[int(attrs["count"])] in item.caption.split()
        assert item.image.size == (48, 48)
    assert len({x.caption for x in a}) > 10  # varied templates and attributes


def test_attributes_that_do_not_vary_are_neither_drawn_nor_said() -> None:
    cfg = SyntheticConfig(attributes=("colour", "shape"), image_size=32, templates="plain")
    items = list(generate(cfg, 40))
    assert all(it.attributes["count"] == 1 for it in items)
    words = {w for it in items for w in it.caption.split()}
    assert not words & {"one", "two", "three", "left", "right", "striped", "small"}
    # Colour is visible: the most common non-background pixel of a "red" image is reddish.
    red = next(it for it in items if it.attributes["colour"] == "red")
    r, g, b = max(red.image.getcolors(4096) or [], key=lambda c: c[0] if c[1][0] > 150 else 0)[1]
    assert r > 150 and g < 100 and b < 100


def test_write_folder_writes_sidecars_and_a_manifest_and_is_idempotent(tmp_path: Path) -> None:
    cfg = SyntheticConfig(attributes=("colour", "word"), image_size=32, seed=1)
    paths = write_folder(cfg, 6, tmp_path / "syn")
    assert [p.name for p in paths] == [f"{i:06d}.png" for i in range(6)]
    assert all(p.with_suffix(".txt").read_text().strip() for p in paths)
    manifest = read_manifest(tmp_path / "syn")
    assert set(manifest) == {p.name for p in paths}
    assert all(m["word"] for m in manifest.values())
    mtime = paths[0].stat().st_mtime_ns
    write_folder(cfg, 6, tmp_path / "syn")
    assert paths[0].stat().st_mtime_ns == mtime
    pairs = load_pairs(tmp_path / "syn")
    assert len(pairs) == 6 and not pairs.problems


def test_bad_synthetic_configs_are_refused() -> None:
    with pytest.raises(SyntheticError, match="unknown synthetic attributes"):
        SyntheticConfig(attributes=("colour", "smell"))
    with pytest.raises(SyntheticError, match="image_size"):
        SyntheticConfig(image_size=4)
    with pytest.raises(SyntheticError, match="unknown colours"):
        SyntheticConfig(colours=("mauve",))
    with pytest.raises(SyntheticError, match="words"):
        SyntheticConfig(words=("../etc",))
