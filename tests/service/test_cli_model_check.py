"""`clipsearch ingest` checks the model can be had before it queues anything."""

from __future__ import annotations

from pathlib import Path

from test_cli import _env, assert_user_error, run, write_images


def test_ingest_with_an_unusable_model_fails_before_queueing(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    write_images(photos)
    cases = [
        ({"CLIPSEARCH_MODEL": str(tmp_path / "no-such-model")}, "no-such-model"),
        ({"CLIPSEARCH_MODEL": "no-such-name"}, "not a registry name"),
        (
            {"CLIPSEARCH_MODEL": "ViT-B-16-SigLIP", "CLIPSEARCH_OFFLINE": "1",
             "CLIPSEARCH_CACHE": str(tmp_path / "cache")},
            "huggingface-cli download timm/ViT-B-16-SigLIP",
        ),
    ]  # fmt: skip
    for i, (extra, needle) in enumerate(cases):
        env = _env(tmp_path / f"data{i}", None, **extra)
        proc = run(["ingest", str(photos)], env)
        assert_user_error(proc, needle)
        status = run(["status"], env)
        assert "jobs: none" in status.stdout, status.stdout + status.stderr
