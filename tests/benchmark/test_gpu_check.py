"""scripts/gpu_check.sh on the CPU with tiny settings: every step gets a row in the summary table and the JSON, a
step that runs out of time is recorded as such without losing the others, and nothing is written outside OUT_DIR."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STEPS = ["setup", "dataset", "preprocess", "benchmark", "benchmark_compile", "study"]


def _repo_status() -> list[str]:
    """The clone's changed, new and ignored files, bytecode caches aside (Python writes them on first import)."""
    lines = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO, capture_output=True,
                           text=True).stdout.splitlines()
    return [line for line in lines if "__pycache__" not in line]


@pytest.mark.e2e
def test_gpu_check_on_the_cpu_writes_a_row_per_step(tmp_path):
    out = tmp_path / "check"
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env.update(DEVICE="cpu", VENV=sys.prefix, GPU_CHECK_SETUP="0", GPU_CHECK_TINY="1", GPU_CHECK_COMPILE="0",
               GPU_CHECK_LIMIT_STUDY="5", OMP_NUM_THREADS="2")  # the study cannot finish in 5 s: a timed-out step
    before = _repo_status()
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(out)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    progress = [line for line in proc.stdout.splitlines() if line.startswith("[gpu_check] step ")]
    assert [line.split()[3].rstrip(":") for line in progress] == STEPS
    summary = json.loads((out / "gpu_check.json").read_text())
    status = {row["step"]: row["status"] for row in summary["steps"]}
    assert [row["step"] for row in summary["steps"]] == STEPS
    assert status["dataset"] == status["preprocess"] == status["benchmark"] == "ok"
    assert status["setup"].startswith("skipped") and status["benchmark_compile"].startswith("skipped")
    assert status["study"] == "timed out"
    figures = summary["steps"][STEPS.index("benchmark")]["figures"]
    assert figures["compute_triplets_per_s"] > 0 and figures["end_to_end_over_compute"] > 0
    table = (out / "gpu_check.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| ") and not line.startswith("| step")]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == STEPS
    assert "end to end" in rows[STEPS.index("benchmark")]
    assert (out / "nnunet" / "preprocessed").is_dir() and _repo_status() == before
