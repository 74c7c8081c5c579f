"""Zero-shot tags (indexer.tags, tag_jobs, tag_decisions): tags defined in words after the
pictures were embedded find the right pictures, a person's rejection survives every later run,
a group keeps one tag per picture, a model that knows nothing assigns (almost) nothing, new
pictures are tagged as they are embedded, and a page of a tag reads keys only.

Most tests build the catalog's vectors by hand from known directions ("dog" pictures near the
dog direction, a text model that maps the word "dog" there), so what the right answer is does not
depend on the code under test; one runs the real ingest and job with an untrained CLIP.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from workerutil import Env

from clipsearch.indexer import catalog, tag_jobs, tags
from clipsearch.indexer.catalog import Embedding, Image, ModelRecord
from clipsearch.indexer.errors import Conflict, NotFound
from clipsearch.indexer.tag_vocabulary import (
    CLIP7_TEMPLATES,
    IMAGENET_TEMPLATES,
    STARTER_VOCABULARY,
    embed_tag,
)

DIM = 48
CONCEPTS = {"dog": 0, "puppy": 0, "cat": 1, "kitten": 1, "boat": 2, "ship": 2, "car": 3}
KINDS = {"dog": 60, "cat": 60, "boat": 40, "other": 200}


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _token_vector(token: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(token.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).normal(size=DIM)


class WordModel:
    """A text tower that knows a few words: each names a direction; other words are noise."""

    def __init__(self, knows: bool = True) -> None:
        self.knows = knows

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for text in texts:
            v = np.zeros(DIM)
            for token in re.findall(r"[a-z]+", text.lower()):
                if self.knows and token in CONCEPTS:
                    v[CONCEPTS[token]] += 3.0
                else:
                    v += 0.15 * _token_vector(token)
            out.append(v)
        return _unit(np.asarray(out))


def _pictures(seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Picture kinds and their vectors: a concept's direction plus noise; "other" is noise in
    dimensions no word names."""
    rng = np.random.default_rng(seed)
    kinds, vecs = [], []
    for kind, n in KINDS.items():
        for _ in range(n):
            noise = rng.normal(size=DIM)
            noise[:4] = 0
            if kind == "other":
                v = noise
            else:
                v = np.zeros(DIM)
                v[CONCEPTS[kind]] = 1.0
                v += 0.12 * noise
            kinds.append(kind)
            vecs.append(v)
    return kinds, _unit(np.asarray(vecs))


def _add(Session_: sessionmaker[Session], vectors: np.ndarray, start: int = 0) -> list[int]:
    """Pictures with these vectors, embedded by model "words" (ids in order)."""
    with Session_() as s:
        model = catalog.get_or_create_model(s, "words", "f" * 64, DIM)
        s.commit()
        ids = []
        for i, v in enumerate(vectors, start=start):
            sha = f"{i:064x}"
            img = Image(path=f"/lib/{i}.png", folder="/lib", size=1, mtime_ns=0, sha256=sha,
                        state="ready", format="PNG")  # fmt: skip
            s.add(img)
            s.add(Embedding(sha256=sha, model_id=model.id, vector=catalog.vector_to_bytes(v)))
            s.flush()
            ids.append(int(img.id))
        s.commit()
    return ids


@pytest.fixture()
def lib(
    sessions: sessionmaker[Session],
) -> Iterator[tuple[sessionmaker[Session], list[int], list[str]]]:
    kinds, vecs = _pictures()
    ids = _add(sessions, vecs)
    yield sessions, ids, kinds


def _model_id(Session_: sessionmaker[Session]) -> int:
    with Session_() as s:
        return int(s.scalar(sa.select(ModelRecord.id).where(ModelRecord.name == "words")))


def _tagged(Session_: sessionmaker[Session], name: str) -> set[int]:
    out: set[int] = set()
    after = None
    with Session_() as s:
        while True:
            items, after = tags.images_page(s, name, after, 200)
            out |= {int(i.image.id) for i in items}
            if after is None:
                return out


def _precision_recall(got: set[int], want: set[int]) -> tuple[float, float]:
    hit = len(got & want)
    return hit / max(len(got), 1), hit / max(len(want), 1)


def test_the_template_ensemble_is_the_papers() -> None:
    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80
    assert set(CLIP7_TEMPLATES) <= set(IMAGENET_TEMPLATES) and len(CLIP7_TEMPLATES) == 7
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    # the embedding is the normalised mean of the normalised prompt embeddings
    m = WordModel()
    v = embed_tag(m, ["dog", "puppy"], ["a photo of a {}.", "art of the {}."])
    prompts = ["a photo of a dog.", "art of the dog.", "a photo of a puppy.", "art of the puppy."]
    want = _unit(m.embed_texts(prompts).mean(axis=0))
    assert np.allclose(v, want, atol=1e-6) and abs(np.linalg.norm(v) - 1) < 1e-5


def test_a_tag_defined_in_words_after_ingestion_tags_the_right_pictures(lib) -> None:  # type: ignore[no-untyped-def]
    Session_, ids, kinds = lib
    with Session_() as s:
        seeded = {t.name for t in tags.list_tags(s)}
        assert {spec.name for spec in STARTER_VOCABULARY} == seeded
        tags.create_tag(s, "boats", ["boat", "ship"])
        with pytest.raises(Conflict):
            tags.create_tag(s, "boats")
    run = tag_jobs.tag_library(Session_, WordModel(), _model_id(Session_))
    assert run.images == len(ids) and run.embedded == len(seeded) + 1
    for name, kind in (("boats", "boat"), ("dogs", "dog"), ("cats", "cat")):
        want = {i for i, k in zip(ids, kinds, strict=True) if k == kind}
        precision, recall = _precision_recall(_tagged(Session_, name), want)
        assert precision >= 0.9 and recall >= 0.9, (name, precision, recall)
    # words no picture shows find nothing
    assert _tagged(Session_, "receipts") == set()
    with Session_() as s:
        info = tags.get_tag(s, "boats")
        assert info.assigned == len(_tagged(Session_, "boats"))
        assert info.threshold is not None and info.precision is not None
        assert info.precision >= 0.9
        one = tags.image_tags(s, ids[kinds.index("boat")])
        assert [t.name for t in one] == ["boats"] and one[0].state == "auto"
        assert one[0].score is not None and one[0].score >= info.threshold


def test_a_rejection_survives_every_later_run_and_a_confirmation_stays(lib) -> None:  # type: ignore[no-untyped-def]
    Session_, ids, kinds = lib
    model_id = _model_id(Session_)
    tag_jobs.tag_library(Session_, WordModel(), model_id)
    dog = ids[kinds.index("dog")]
    other = ids[kinds.index("other")]
    assert dog in _tagged(Session_, "dogs") and other not in _tagged(Session_, "dogs")
    with Session_() as s:
        tags.set_assignment(s, "dogs", dog, "rejected")
        tags.set_assignment(s, "dogs", other, "confirmed")
        with pytest.raises(NotFound):
            tags.set_assignment(s, "dogs", 10**9, "confirmed")
    for _ in range(2):
        tag_jobs.tag_library(Session_, WordModel(), model_id)
        got = _tagged(Session_, "dogs")
        assert dog not in got and other in got
    with Session_() as s:
        states = {t.name: t.state for t in tags.image_tags(s, dog)}
        assert states["dogs"] == "rejected"
        assert [t.name for t in tags.image_tags(s, dog, rejected=False)] == []
        # new words for the tag drop the automatic assignments, never a person's decisions
        tags.update_tag(s, "dogs", descriptions=["puppy"])
    got = _tagged(Session_, "dogs")
    assert other in got and dog not in got
    tag_jobs.tag_library(Session_, WordModel(), model_id)
    assert dog not in _tagged(Session_, "dogs") and len(_tagged(Session_, "dogs")) > 50


def test_a_group_of_exclusive_tags_gives_each_picture_one(sessions: sessionmaker[Session]) -> None:
    rng = np.random.default_rng(3)
    mixed = np.zeros((40, DIM))
    mixed[:, 0] = 1.0  # dog and cat at once, dog a little stronger in half of them
    mixed[:, 1] = np.where(np.arange(40) % 2 == 0, 0.8, 1.0)
    mixed[:, 4:] = 0.05 * rng.normal(size=(40, DIM - 4))
    kinds, vecs = _pictures()
    ids = _add(sessions, np.concatenate([vecs, _unit(mixed)]))
    mixed_ids = ids[len(vecs) :]
    model_id = _model_id(sessions)
    tag_jobs.tag_library(sessions, WordModel(), model_id)
    both = _tagged(sessions, "dogs") & _tagged(sessions, "cats") & set(mixed_ids)
    assert len(both) > 10  # without a group, a picture of both gets both
    with sessions() as s:
        tags.update_tag(s, "dogs", group="pets")
        tags.update_tag(s, "cats", group="pets")
    tag_jobs.tag_library(sessions, WordModel(), model_id)
    dogs, cats = _tagged(sessions, "dogs"), _tagged(sessions, "cats")
    assert not dogs & cats
    want_dogs = {i for i, k in zip(ids, kinds, strict=False) if k == "dog"}
    assert _precision_recall(dogs - set(mixed_ids), want_dogs)[1] >= 0.9


def test_a_model_that_knows_no_word_assigns_almost_nothing(lib) -> None:  # type: ignore[no-untyped-def]
    Session_, ids, _kinds = lib
    run = tag_jobs.tag_library(Session_, WordModel(knows=False), _model_id(Session_))
    assert run.assigned <= 0.01 * len(ids) * run.tags, run.per_tag


def test_new_pictures_are_tagged_as_they_are_embedded(lib) -> None:  # type: ignore[no-untyped-def]
    Session_, ids, _kinds = lib
    model_id = _model_id(Session_)
    assert tag_jobs.tag_images(Session_, model_id, ids[:5]) == 0  # no calibration yet
    tag_jobs.tag_library(Session_, WordModel(), model_id)
    with Session_() as s:
        assert not tag_jobs.needs_run(s, model_id)
    kinds, vecs = _pictures(seed=9)
    new = _add(Session_, vecs[:: len(vecs) // 20], start=10_000)
    new_kinds = kinds[:: len(vecs) // 20]
    written = tag_jobs.tag_images(Session_, model_id, new)
    dogs = _tagged(Session_, "dogs")
    assert written > 0
    assert {i for i, k in zip(new, new_kinds, strict=True) if k == "dog"} <= dogs
    assert not {i for i, k in zip(new, new_kinds, strict=True) if k == "other"} & dogs
    assert tag_jobs.tag_images(Session_, model_id, new) == 0  # twice is once


def test_deleting_a_tag_or_a_picture_deletes_its_assignments(lib) -> None:  # type: ignore[no-untyped-def]
    Session_, ids, kinds = lib
    tag_jobs.tag_library(Session_, WordModel(), _model_id(Session_))
    dog = ids[kinds.index("dog")]
    with Session_() as s:
        s.execute(sa.delete(Image).where(Image.id == dog))
        s.commit()
        assert dog not in _tagged(Session_, "dogs")
        tags.delete_tag(s, "dogs")
        with pytest.raises(NotFound):
            tags.get_tag(s, "dogs")
        assert (
            s.scalar(
                sa.select(sa.func.count())
                .select_from(tags.TagAssignment)
                .where(tags.TagAssignment.image_id == dog)
            )
            == 0
        )
        # the starter vocabulary is seeded once: a deleted starter tag stays deleted
        assert "dogs" not in {t.name for t in tags.list_tags(s)}


def test_a_page_of_a_tag_reads_keys_only(tmp_path: Path) -> None:
    engine = catalog.init_db(f"sqlite:///{tmp_path / 'c.db'}")
    Session_ = catalog.session_factory(engine)
    try:
        with Session_() as s:
            s.execute(
                sa.insert(Image),
                [{"path": f"/p/{i}.jpg", "folder": "/p", "size": 1, "mtime_ns": 0,
                  "sha256": f"{i:064x}", "state": "ready"} for i in range(5000)],
            )  # fmt: skip
            tags.ensure_vocabulary(s)
            tag_id = int(s.scalar(sa.select(tags.Tag.id).where(tags.Tag.name == "food")))
            s.execute(
                sa.insert(tags.TagAssignment),
                [{"tag_id": tag_id, "image_id": i, "score": 0.3, "state": "auto",
                  "updated_at": catalog.utcnow()} for i in range(1, 5001, 3)],
            )  # fmt: skip
            s.commit()
            items, after = tags.images_page(s, "food", None, 20)
            assert len(items) == 20 and after == items[-1].image.id
            for stmt in (
                tags.tag_page_statement(tag_id, after, 20),
                sa.select(tags.TagAssignment).where(tags.TagAssignment.image_id == 7),
            ):
                compiled = stmt.compile(engine, compile_kwargs={"literal_binds": True})
                plan = " ".join(
                    str(r) for r in s.execute(sa.text("EXPLAIN QUERY PLAN " + str(compiled)))
                )
                assert "SCAN" not in plan.replace("SCAN CONSTANT", ""), plan
    finally:
        engine.dispose()


def test_the_tags_job_runs_on_a_real_ingest_with_an_untrained_model(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from clipsearch.model.finetune.synthetic import SyntheticConfig, write_folder

    folder = tmp_path / "pictures"
    write_folder(SyntheticConfig(image_size=32), 40, folder)
    env = Env(tmp_path / "data", tiny_model_dir, None)
    try:
        env.ingest(folder)
        job = tags.submit(env.lib)
        assert tags.submit(env.lib).id == job.id  # one queued job at a time
        run = tag_jobs.run_tags(env.ctx, job.id)
        assert env.lib.get_job(job.id).state == "done"
        assert run is not None and run.images == 40
        # an untrained model cannot tell a receipt from a dog: calibration assigns almost nothing
        assert run.assigned <= 0.02 * run.images * run.tags, run.per_tag
    finally:
        env.close()


def test_a_model_switch_re_tags(tmp_path: Path, tiny_model_dir: Path) -> None:
    from clipsearch.model.checkpoints import save_pretrained
    from clipsearch.model.finetune.synthetic import SyntheticConfig, write_folder
    from clipsearch.model.testing import tiny_model

    other = save_pretrained(tiny_model(seed=1), tmp_path / "other-model")
    folder = tmp_path / "pictures"
    write_folder(SyntheticConfig(image_size=32), 12, folder)
    env = Env(tmp_path / "data", tiny_model_dir, None)
    try:
        env.ingest(folder)
        job = tags.submit(env.lib)
        tag_jobs.run_tags(env.ctx, job.id)
        with env.lib.Session() as s:
            first = tags.library_model_id(s)
            before = {int(v.model_id) for v in s.scalars(sa.select(tags.TagVector))}
        assert before == {first}
        env.reindex(str(other))
        with env.lib.Session() as s:
            now = tags.library_model_id(s)
            vectors = list(
                s.scalars(sa.select(tags.TagVector).where(tags.TagVector.model_id == now))
            )
        assert now != first
        assert len(vectors) == len(STARTER_VOCABULARY)  # every tag embedded and calibrated again
        assert all(v.library_size == 12 for v in vectors)
    finally:
        env.close()


def test_a_group_classifier_adds_recall_only_where_the_strict_decisions_vouch_for_it() -> None:
    from clipsearch.indexer import tag_decisions as td

    rng = np.random.default_rng(3)
    n = 600
    truth = rng.integers(0, 3, n)  # each picture shows one of three colours
    scores = 0.20 + 0.02 * rng.normal(size=(n, 3))
    scores[np.arange(n), truth] += rng.uniform(0.03, 0.15, n)  # its own colour scores higher
    groups = ["colour"] * 3
    # strict thresholds that only the clearest pictures pass (as the background makes them)
    cuts, margins = [0.33, 0.33, 0.33], [0.0, 0.0, 0.0]
    strict = td.decide(scores, cuts, margins, groups)
    trusted = td.trusted_groups(scores, cuts, margins, groups, logit_scale=100.0)
    assert trusted == [100.0, 100.0, 100.0]
    more = td.decide(scores, cuts, margins, groups, trusted)
    right = more[np.arange(n), truth]
    assert more.sum() > 2 * strict.sum()  # the classifier adds pictures the thresholds missed
    assert right.sum() / more.sum() >= 0.9  # at the target precision, measured on the truth
    # a model that cannot tell the group's tags apart: the clear pictures score two tags alike,
    # so the classifier is unsure where the thresholds decided, and it is not trusted
    alike = 0.20 + 0.005 * rng.normal(size=(n, 3))
    alike[:100, 0] += 0.15
    alike[:100, 1] += 0.14
    assert td.trusted_groups(alike, [0.33, 0.36, 0.33], margins, groups, 100.0) == [None] * 3
    # no picture passes a strict threshold (a random model): nothing to vouch for it
    noise = 0.20 + 0.02 * rng.normal(size=(n, 3))
    assert td.trusted_groups(noise, cuts, margins, groups, logit_scale=100.0) == [None] * 3
    assert not td.decide(noise, cuts, margins, groups, [None] * 3).any()


def test_a_group_classifier_is_not_trusted_on_the_seeds_of_one_tag_alone() -> None:
    from clipsearch.indexer import tag_decisions as td

    rng = np.random.default_rng(4)
    n = 600
    truth = rng.integers(0, 3, n)
    scores = 0.20 + 0.02 * rng.normal(size=(n, 3))
    scores[np.arange(n), truth] += rng.uniform(0.03, 0.15, n)
    scores[truth == 1, 0] += 0.10  # the classifier takes the second tag's pictures for the first
    groups = ["shape"] * 3
    margins = [0.0, 0.0, 0.0]
    # only the first tag's clearest pictures pass a strict threshold: they all agree with the
    # classifier, which says nothing about its mistakes on the other tags' pictures
    cuts = [0.33, np.inf, np.inf]
    assert td.decide(scores, cuts, margins, groups)[:, 0].sum() >= td.MIN_SEEDS
    assert td.trusted_groups(scores, cuts, margins, groups, logit_scale=100.0) == [None] * 3
    assert not td.decide(scores, cuts, margins, groups, [None] * 3)[:, 1:].any()
