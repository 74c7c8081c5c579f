"""bench/gpu.py stays runnable while no GPU is lent: its CPU fallbacks run here at toy size."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECTIONS = [
    "image, model only",
    "image end to end, 640x480 JPEG, GPU decode",
    "image end to end, 640x480 JPEG, CPU decode",
    "ingest pipeline, device decode off",
    "ingest pipeline, device decode on",
    "text, one query at a time",
    "text, batch 256",
    "FAISS k-means (IVF coarse quantizer)",
    "FAISS IVF search, k=10, nprobe 32",
    "fine-tune (contrastive, AdamW)",
]


@pytest.mark.slow
def test_quick_cpu_run_fills_every_section(tmp_path: Path) -> None:
    out = tmp_path / "gpu.md"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",  # as the benchmarks run: bench.gpu imports bench.synthetic_vectors
            "bench.gpu",
            "--quick",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=500,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = out.read_text()
    assert "--quick run" in table  # toy figures are labelled as such
    for section in SECTIONS:
        row = next((ln for ln in table.splitlines() if ln.startswith(f"| {section} |")), None)
        assert row is not None, f"no row for {section!r} in\n{table}"
        value = float(row.split("|")[3].replace(",", ""))
        assert value > 0, row
    # the device decode path and the CPU pool embed the same files alike
    cosines = [float(c) for c in re.findall(r"min cosine vs CPU path ([0-9.]+)", table)]
    assert len(cosines) == 2 and min(cosines) > 0.999, table


def test_without_cuda_the_full_run_says_what_to_do() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the full run is the benchmark itself")
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "CUDA is not available" in proc.stderr and "--quick --device cpu" in proc.stderr
