"""`clipsearch search` against the REST API on one library: what a query costs from the shell.

One library (a random-weight ViT-B-32, real size, and ``--vectors`` seeded images with a built
index: bench/service.py's ``prepare``), one ``clipsearch serve`` on it, then, each query a new
text so no cache answers it:

* **API**: ``GET /api/search`` from this process (httpx, a warm connection), wall time;
* **CLI, server running**: ``clipsearch search TEXT`` as a new process; it finds the server in
  the data folder's run file (service/runfile.py) and asks it: process start, imports, request;
* **CLI, on its own**: the same with ``--no-server``: the process loads the library's model and
  measures the relevance background itself before its one search.

Run ``python -m bench.cli [--vectors N] [--runs N]``; the figures go into bench/results/cli.md
(then ``python -m bench.collect`` copies them into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.service import _cpu, _versions, free_port, prepare, start_server, wait_up

REPO = Path(__file__).resolve().parents[1]
SECTION = "# CLI vs API: one text query (bench/cli.py)"
CPU: list[float] = []  # CPU seconds (user + system) of each `clipsearch search` process
WORDS = ["harbour", "lantern", "meadow", "glacier", "bicycle", "orchard", "canyon", "festival"]


def _cli(facts: dict[str, Any], text: str, *extra: str) -> tuple[float, list[int]]:
    """Seconds for one `clipsearch search` process, and the ids it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    script = REPO / ".venv" / "bin" / "clipsearch"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "clipsearch.service.cli"]
    cmd += ["search", text, "-k", "20", "--json", "--data-dir", str(facts["data_dir"]), *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, check=False)
    seconds = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"clipsearch search failed: {proc.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    CPU.append(cpu)
    return seconds, [int(h["id"]) for h in json.loads(proc.stdout)]


def measure(facts: dict[str, Any], runs: int, local_runs: int, work: Path) -> dict[str, Any]:
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(facts, port, work / "server.log")
    out: dict[str, Any] = {"load_before": _loadavg()}
    try:
        out["health"] = wait_up(base, server)
        with httpx.Client(base_url=base, timeout=120) as client:
            client.get("/api/search", params={"q": "warm up", "k": 20})
            api = []
            for i in range(runs):
                t = time.perf_counter()
                r = client.get("/api/search", params={"q": f"api {WORDS[i % 8]} {i}", "k": 20})
                api.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
            same = client.get("/api/search", params={"q": "cli and api agree", "k": 20}).json()
        out["api_s"] = api
        CPU.clear()
        via = [_cli(facts, f"cli {WORDS[i % 8]} {i}")[0] for i in range(runs)]
        out["cli_server_s"] = via
        out["cli_server_cpu_s"] = list(CPU)
        _, ids = _cli(facts, "cli and api agree")
        out["same_ids"] = ids == [h["id"] for h in same["results"]]
    finally:
        server.terminate()
        server.wait(30)
    CPU.clear()
    out["cli_local_s"] = [_cli(facts, f"local {WORDS[i % 8]} {i}")[0] for i in range(local_runs)]
    out["cli_local_cpu_s"] = list(CPU)
    out["load_after"] = _loadavg()
    return out


def _loadavg() -> float | None:
    """The 1-minute load average (how shared the CPUs were), where the system says."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def write_report(facts: dict[str, Any], res: dict[str, Any], path: Path) -> str:
    def p50(xs: list[float]) -> float:
        return statistics.median(xs)

    api = p50(res["api_s"]) * 1000
    via = p50(res["cli_server_s"])
    local = p50(res["cli_local_s"])
    lines = [
        SECTION,
        "",
        f"- Machine: {_cpu()}, {os.cpu_count()} logical CPUs, {platform.system()} "
        f"{platform.release()}; load average {res.get('load_before')} before, "
        f"{res.get('load_after')} after (the CPUs were shared with other work: figures are "
        "medians, and CPU time is what a process costs on an idle machine)",
        f"- Versions: {_versions()}",
        f"- Library: {facts['vectors']:,} images (seeded vectors, built index), a random-weight "
        "ViT-B-32 (real size), SQLite, exact query precision; each query a new text, k = 20, "
        "the default cut",
        "",
        "| door | median wall time | its process's CPU time | runs |",
        "|---|---|---|---|",
        f"| API, `GET /api/search` (warm connection) | {api:.0f} ms | (server) | "
        f"{len(res['api_s'])} |",
        f"| `clipsearch search`, server running (asks it) | {via * 1000:.0f} ms | "
        f"{p50(res['cli_server_cpu_s']) * 1000:.0f} ms | {len(res['cli_server_s'])} |",
        f"| `clipsearch search`, no server (loads the text tower) | {local:.1f} s | "
        f"{p50(res['cli_local_cpu_s']):.1f} s | {len(res['cli_local_s'])} |",
        "",
        f"The CLI asking the server gives the API's ids in the API's order: {res['same_ids']}. "
        "What the CLI adds to the API is its process: Python's start and the command line's "
        "imports (the data folder given by --data-dir, the run file is read without importing "
        "the settings; no torch, no FAISS). On its own it imports torch and "
        "reads the library model's text tower only (model.load(image_tower='on_demand'): the "
        "image tower stays on disk) before its one search; the relevance calibration the server "
        "measured is read from the data folder (relevance.json) instead of embedding the "
        "background again (which took 63 s wall, 16.8 s CPU per search on this box before).",
        "",
    ]
    section = "\n".join(lines)
    path.write_text(section)
    return section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=10, help="API and CLI-with-server queries")
    parser.add_argument("--local-runs", type=int, default=3, help="CLI queries without a server")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--report", type=Path, default=REPO / "bench" / "results" / "cli.md")
    args = parser.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="clipsearch-bench-cli-"))
    saved = work / "facts.json"
    if saved.exists():
        facts = json.loads(saved.read_text())
        facts["model_dir"], facts["data_dir"] = Path(facts["model_dir"]), Path(facts["data_dir"])
    else:
        facts = prepare(work, args.vectors)
        saved.write_text(json.dumps(facts, default=str))
    res = measure(facts, args.runs, args.local_runs, work)
    (work / "results.json").write_text(json.dumps(res, default=str, indent=1))
    print(write_report(facts, res, args.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
