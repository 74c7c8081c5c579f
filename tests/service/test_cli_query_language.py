"""`clipsearch search --lang CODE`, run as a user runs it: a library indexed with the tiny
NLLB-SigLIP of tests/model/fixtures/nllb_siglip reads the query in the chosen language,
`--lang list` prints the codes, a bad code is one clear error line, and a library whose model
takes no language code searches anyway with a warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from svc_testlib import write_images

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / ".venv" / "bin" / "clipsearch"
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "clipsearch.service.cli"]
NLLB_DIR = REPO / "tests" / "model" / "fixtures" / "nllb_siglip"


def _env(data_dir: Path, model_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    env.update(
        CLIPSEARCH_DATA_DIR=str(data_dir), CLIPSEARCH_MODEL=str(model_dir), OMP_NUM_THREADS="1"
    )
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=180
    )


def _scores(proc: subprocess.CompletedProcess[str]) -> dict[int, float]:
    assert proc.returncode == 0, proc.stderr
    return {hit["id"]: hit["score"] for hit in json.loads(proc.stdout)}


def _ingest(tmp_path: Path, model_dir: Path) -> dict[str, str]:
    photos = tmp_path / "photos"
    write_images(photos)
    env = _env(tmp_path / "data", model_dir)
    proc = run(["ingest", str(photos), "--wait", "--quiet", "--timeout", "150"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return env


def _one_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("clipsearch: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.slow
def test_search_lang_on_a_multilingual_library(tmp_path: Path) -> None:
    env = _ingest(tmp_path, NLLB_DIR)
    query = ["search", "un chien sur la plage", "-k", "6", "--mode", "semantic", "--json"]
    query += ["--min-relevance", "0"]  # every result: the scores are compared
    default = _scores(run(query, env))
    french = _scores(run([*query, "--lang", "fra_Latn"], env))
    english = _scores(run([*query, "--lang", "eng_Latn"], env))
    assert len(default) == 6 and set(french) == set(default)
    assert english == default  # eng_Latn is the model's default
    assert max(abs(french[i] - default[i]) for i in default) > 1e-4  # read as French

    listed = run(["search", "--lang", "list"], env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.split()
    assert lines[:2] == ["default:", "eng_Latn"]
    assert len(lines[2:]) == 202 and {"fra_Latn", "jpn_Jpan"} <= set(lines[2:])

    unknown = _one_error(run([*query, "--lang", "xyz_Abcd"], env))
    assert "--lang: unknown language code 'xyz_Abcd'" in unknown
    assert "clipsearch search --lang list" in unknown
    malformed = _one_error(run([*query, "--lang", "french"], env))
    assert "--lang: 'french' is not a FLORES-200 language code" in malformed


@pytest.mark.slow
def test_search_lang_on_a_library_whose_model_takes_none(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    env = _ingest(tmp_path, tiny_model_dir)
    query = ["search", "a red square", "-k", "4", "--mode", "semantic", "--json"]
    query += ["--min-relevance", "0"]
    plain = _scores(run(query, env))
    proc = run([*query, "--lang", "fra_Latn"], env)
    assert _scores(proc) == plain  # searched, as without --lang
    assert "warning: --lang fra_Latn ignored" in proc.stderr
    assert "takes no language code" in proc.stderr
    listed = run(["search", "--lang", "list"], env)
    assert listed.returncode == 0 and "takes no language code" in listed.stdout
