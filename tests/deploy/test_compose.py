"""docker-compose.yml is checked without a Docker engine: against the Compose Specification's JSON
schema, and against what the code actually reads (CLI commands and CLIPSEARCH_* settings)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_specification(compose: dict) -> None:
    schema = json.loads((REPO / "deploy" / "schema" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_schema_check_catches_a_broken_compose_file(compose: dict) -> None:
    # The check above can fail: a misspelt key and a wrong type are both reported.
    schema = json.loads((REPO / "deploy" / "schema" / "compose-spec.json").read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["helthcheck"] = broken["services"]["api"].pop("healthcheck")
    broken["services"]["redis"]["ports"] = "6379"
    messages = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(broken)]
    assert any("helthcheck" in m for m in messages)
    assert len(messages) >= 2


def test_every_dockerfile_and_what_it_copies_exists(compose: dict) -> None:
    for name, service in compose["services"].items():
        build = service.get("build")
        if not build:
            continue
        dockerfile = REPO / build["context"] / build["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY ") and "--from=" not in line:  # not another stage's
                for src in shlex.split(line)[1:-1]:
                    assert (REPO / build["context"] / src).exists(), (
                        f"{dockerfile.name}: COPY {src}"
                    )


def test_gpu_worker_reserves_an_nvidia_gpu_and_cpu_profile_exists(compose: dict) -> None:
    gpu = compose["services"]["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "gpu" in gpu["profiles"]
    assert "cpu" in compose["services"]["worker-cpu"]["profiles"]
    for svc in ("api", "worker-gpu", "worker-cpu"):
        assert "/photos:ro" in " ".join(compose["services"][svc]["volumes"]), svc


def test_every_command_is_one_the_cli_accepts(compose: dict) -> None:
    from clipsearch.service.cli import build_parser

    parser = build_parser()
    seen = 0
    for name, service in compose["services"].items():
        command = service.get("command")
        if not command or command[0] != "clipsearch":
            continue
        try:
            parser.parse_args(command[1:])
        except SystemExit as exc:  # argparse exits on an unknown command or flag
            pytest.fail(f"{name}: `{' '.join(command)}` is refused by the CLI ({exc})")
        seen += 1
    assert seen >= 3


def test_every_clipsearch_setting_in_compose_is_read_by_the_code(compose: dict) -> None:
    from clipsearch.service.settings import Settings

    table = getattr(Settings, "env_table", None)  # the settings tree: every flat variable
    fields = (
        {name for name in table() if "__" not in name}
        if table is not None
        else {f"CLIPSEARCH_{name.upper()}" for name in Settings.model_fields}
    )
    read_elsewhere = {"CLIPSEARCH_CACHE"}  # model/registry.py: where weights are cached
    registry_src = (REPO / "model" / "registry.py").read_text()
    assert "CLIPSEARCH_CACHE" in registry_src
    names: set[str] = set()
    for service in compose["services"].values():
        names |= {k for k in (service.get("environment") or {}) if k.startswith("CLIPSEARCH_")}
    names |= set(re.findall(r"\$\{(CLIPSEARCH_[A-Z_]+)", COMPOSE.read_text())) - {"CLIPSEARCH_PORT"}
    unknown = sorted(names - fields - read_elsewhere)
    assert not unknown, f"compose sets variables the code never reads: {unknown}"


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_api_healthcheck_passes_only_when_the_service_is_ready(
    compose: dict, status: int, healthy: bool
) -> None:
    """The api container's healthcheck, run against a stand-in /api/health/ready on 127.0.0.1
    (503: a part is not ready)."""
    import http.server
    import subprocess
    import sys
    import threading

    body = json.dumps({"status": "ready" if status == 200 else "not ready"}).encode()

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/api/health/ready" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        test = compose["services"]["api"]["healthcheck"]["test"]
        code = test[3].replace("127.0.0.1:8000", f"127.0.0.1:{server.server_port}")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
        assert (done.returncode == 0) is healthy, done.stderr
    finally:
        server.shutdown()


def test_milvus_profile_is_pinned_healthy_and_wired_to_api_and_workers(compose: dict) -> None:
    services = compose["services"]
    milvus = [name for name, svc in services.items() if "milvus" in svc.get("profiles", [])]
    assert set(milvus) == {"milvus", "milvus-etcd", "milvus-minio"}
    for name in milvus:
        svc = services[name]
        tag = svc["image"].rsplit(":", 1)[-1]
        assert tag and tag != "latest" and "/" not in tag, f"{name}: pin its image version"
        assert svc["healthcheck"]["test"], f"{name} has no health check"
    deps = services["milvus"]["depends_on"]
    assert {d: deps[d]["condition"] for d in deps} == {
        "milvus-etcd": "service_healthy",
        "milvus-minio": "service_healthy",
    }
    # api and every worker read CLIPSEARCH_MILVUS_URI (empty: FAISS) from the shared block
    for name in ("api", "worker-gpu", "worker-cpu"):
        assert "CLIPSEARCH_MILVUS_URI" in services[name]["environment"], name
    assert services["milvus"]["expose"] == ["19530"]


def test_images_are_pinned_and_workers_skip_the_http_check(compose: dict) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert tag and tag not in ("latest", "16", "7", "2"), f"{name}: pin {image} to a release"
    for name in ("worker-gpu", "worker-cpu"):  # no HTTP server in a worker
        assert compose["services"][name]["healthcheck"] == {"disable": True}, name


def test_env_example_lists_every_variable_compose_reads() -> None:
    """.env.example (copied to .env) names each ${VAR} of the compose file, and only those."""
    used = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE.read_text()))
    example = (REPO / ".env.example").read_text()
    listed = set(re.findall(r"^([A-Z_]+)=", example, flags=re.M))
    assert used == listed, (sorted(used - listed), sorted(listed - used))
    assert "/.env" in (REPO / ".gitignore").read_text().splitlines(), "keep .env out of git"
