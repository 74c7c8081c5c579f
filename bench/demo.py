"""`clipsearch demo` from nothing (a fresh data folder, no cached model), timed phase by phase.

    .venv/bin/python -m bench.demo [--no-reference] [--images N --steps N]  # smaller: a smoke test

Runs ``clipsearch demo --data-dir <fresh temp folder> --no-serve`` as a user does (a subprocess,
its output piped, so it prints its plain progress lines) three times, one after the other:

1. **reference**: the demo with its recipe before issue 27, in the same conditions: 500 training
   steps of a model with 2 image blocks (service/demo.py's ``DEMO_STEPS`` and ``_clip_config``
   patched back in the child; the recipe is now 1,200 steps with 4 image blocks);
2. **now**: the demo as it is;
3. **cached**: the demo again in run 2's folder (the model is reused, the library is up to date).

Each phase ends at a line the demo prints (set written, pixels cached and the model built: the
first ``fine-tuning: step 0``; training: the last step; ...). CPU is user + system of the demo and
every process under it (the embedded ingest worker included), read from /proc when each line
arrives; load average is sampled with each line. Writes bench/results/demo.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "demo.md"
TICK = os.sysconf("SC_CLK_TCK")

# (phase name, the line that ends it)
PHASES = [
    ("start: imports, the first line", re.compile(r"^clipsearch demo: (making|reusing)")),
    (
        "set written, pairs read, pixels cached, model built",
        re.compile(r"^fine-tuning: step 0 of"),
    ),
    ("training", re.compile(r"^fine-tuning: step (\d+) of \1\b")),
    (
        "model saved (cached: found and loaded)",
        re.compile(r"^clipsearch demo: (trained|cached) model"),
    ),
    ("library opened, ingest worker started", re.compile(r"^clipsearch demo: ingesting, 0 of")),
    ("ingest of the pictures", re.compile(r"^job \d+ \(ingest\)")),
    ("two searches", re.compile(r"^'a blue square on the left'")),
]

REFERENCE = (
    "import sys\n"
    "import clipsearch.service.demo as demo\n"
    "from clipsearch.model.finetune.train import small_clip_config\n"
    "demo.DEMO_STEPS = 500\n"
    "demo._clip_config = lambda: small_clip_config(image_size=32, width=64, layers=2)\n"
    "from clipsearch.service.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@dataclass
class Run:
    name: str
    wall: float = 0.0
    cpu: float = 0.0
    rc: int = 0
    phases: list[tuple[str, float, float]] = field(default_factory=list)  # name, wall, cpu
    loads: list[float] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def _tree_cpu(root: int) -> float:
    """User + system seconds of ``root`` and its live descendants (with their reaped children)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = sum(int(v) for v in fields[11:15]) / TICK
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(p for p, parent in parents.items() if parent == pid)
    return total


def run_demo(name: str, data_dir: Path, reference: bool, extra: list[str]) -> Run:
    bindir = Path(sys.executable).parent  # .venv/bin: its python and the clipsearch command
    args = ["demo", "--data-dir", str(data_dir), "--no-serve", *extra]
    cmd = [str(bindir / "python"), "-c", REFERENCE] if reference else [str(bindir / "clipsearch")]
    cmd += args
    result = Run(name)
    before = os.times()
    tic = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    phase, last_wall, last_cpu, cpu = 0, 0.0, 0.0, 0.0
    for line in proc.stdout:
        wall = time.perf_counter() - tic
        cpu = max(cpu, _tree_cpu(proc.pid))
        result.loads.append(os.getloadavg()[0])
        result.lines.append(f"{wall:7.1f}s {line.rstrip()}")
        for j in range(
            phase, len(PHASES)
        ):  # a phase the run skips (cached: no training) is left out
            if PHASES[j][1].search(line):
                result.phases.append((PHASES[j][0], wall - last_wall, cpu - last_cpu))
                last_wall, last_cpu, phase = wall, cpu, j + 1
                break
    result.rc = proc.wait()
    result.wall = time.perf_counter() - tic
    after = os.times()
    result.cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    result.phases.append(
        ("exit (the worker stopped)", result.wall - last_wall, result.cpu - last_cpu)
    )
    return result


def _table(runs: list[Run]) -> list[str]:
    names = [p for p, _ in PHASES] + ["exit (the worker stopped)"]
    head = "| phase | " + " | ".join(f"{r.name}: wall s | {r.name}: CPU s" for r in runs) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(runs)]
    for phase in names:
        cells = []
        for r in runs:
            got = {n: (w, c) for n, w, c in r.phases}
            cells.append(f"{got[phase][0]:.1f} | {got[phase][1]:.1f}" if phase in got else "- | -")
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    lines.append(
        "| **whole demo** | "
        + " | ".join(f"**{r.wall:.0f}** | **{r.cpu:.0f}**" for r in runs)
        + " |"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-reference", action="store_true", help="skip the reference run")
    parser.add_argument("--images", type=int, help="synthetic pictures (default: the demo's)")
    parser.add_argument("--steps", type=int, help="training steps (default: the demo's)")
    args = parser.parse_args()
    extra = [] if args.images is None else ["--images", str(args.images)]
    extra += [] if args.steps is None else ["--steps", str(args.steps)]
    import torch

    started = datetime.now(UTC)
    work = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    runs: list[Run] = []
    try:
        if not args.no_reference:
            runs.append(run_demo("reference", work / "reference", True, extra))
            print(f"reference: {runs[-1].wall:.0f} s wall, {runs[-1].cpu:.0f} CPU-s", flush=True)
        runs.append(run_demo("now", work / "now", False, extra))
        print(f"now: {runs[-1].wall:.0f} s wall, {runs[-1].cpu:.0f} CPU-s", flush=True)
        runs.append(run_demo("cached", work / "now", False, extra))
        print(f"cached: {runs[-1].wall:.0f} s wall, {runs[-1].cpu:.0f} CPU-s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ended = datetime.now(UTC)
    out = [
        "# demo: `clipsearch demo` from nothing, timed (issues 24 and 27; bench/demo.py)",
        "",
        f"- Run: {started:%Y-%m-%d %H:%M}-{ended:%H:%M} UTC, `.venv/bin/python -m bench.demo`; "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "- Settings: "
        + (
            f"`{' '.join(extra)}` (not the defaults)"
            if extra
            else "the defaults (1,500 synthetic "
            "pictures + 375 background pairs, 1,200 training steps of batch 64 on the CPU, the "
            "small 64-d CLIP with 4 image and 2 text blocks)"
        )
        + ", a fresh data folder each (no cached model), output piped (the demo's plain progress "
        "lines end the phases)",
        "- Runs, one after the other: **reference** = the demo with its recipe before issue 27 "
        "(500 steps, 2 image blocks); **now** = as it is; **cached** = now's folder again",
        "",
    ]
    for r in runs:
        if r.rc != 0:
            out.append(f"- **{r.name} failed** (exit status {r.rc}); its last lines:")
            out.extend(f"      {line}" for line in r.lines[-10:])
        loads = r.loads or [os.getloadavg()[0]]
        out.append(
            f"- Load average (1 min) during {r.name}: {min(loads):.1f}-{max(loads):.1f} "
            f"(mean {sum(loads) / len(loads):.1f}) on {os.cpu_count()} CPUs"
        )
    out += ["", *_table(runs), ""]
    for r in runs:
        train = [ln for ln in r.lines if "fine-tuning: step" in ln or "recall@1" in ln]
        searches = [ln for ln in r.lines if ln.split("s ", 1)[-1].startswith("'")]
        if train or searches:
            out.append(f"{r.name}, as printed (seconds since start):")
            out.append("")
            out.extend(f"    {ln}" for ln in [*train[-3:], *searches])
            out.append("")
    OUT.write_text("\n".join(out).rstrip() + "\n")
    print(f"wrote {OUT}", file=sys.stderr)
    return 0 if all(r.rc == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
