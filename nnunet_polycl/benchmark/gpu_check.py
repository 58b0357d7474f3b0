"""The summary of ``scripts/gpu_check.sh``: one row per step, its status and time, and its figures.

The script records every step as a line ``name, status, seconds, limit`` in ``OUT_DIR/steps.tsv`` and leaves the
steps' results there (``benchmark.json``, ``benchmark_compile.json`` from ``polycl_benchmark``, the study's
``experiment`` folder and log). ``python -m nnunet_polycl.benchmark.gpu_check OUT_DIR`` turns them into
``gpu_check.md`` (a markdown table) and ``gpu_check.json``; a step that failed or ran out of time keeps its row.
"""
from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from datetime import datetime
from os.path import isfile, join

from nnunet_polycl.checkpoint import atomic_write_json

STEPS_FILE = "steps.tsv"
TABLE_FILE = "gpu_check.md"
JSON_FILE = "gpu_check.json"


def read_steps(out_dir: str) -> list[dict]:
    """The steps the script ran, in order: ``{"step", "status", "seconds", "limit_s"}``."""
    steps = []
    with open(join(out_dir, STEPS_FILE)) as f:
        for line in f:
            name, status, seconds, limit = line.rstrip("\n").split("\t")
            steps.append({"step": name, "status": status, "seconds": int(seconds), "limit_s": int(limit)})
    return steps


def benchmark_figures(path: str) -> dict | None:
    """The headline numbers of a ``polycl_benchmark`` JSON result (None when the step wrote none)."""
    if not isfile(path):
        return None
    with open(path) as f:
        result = json.load(f)
    figures, ratios = result["figures"], result["headline"]["ratios"]
    compute = figures["compute"]
    found = {
        "patch": result["patch_size"],
        "compute_triplets_per_s": compute["median"],
        "data_path_over_compute": ratios.get("data_path_over_compute"),
        "end_to_end_triplets_per_s": figures["end_to_end"]["median"],
        "end_to_end_over_compute": ratios.get("end_to_end_over_compute"),
        "peak_memory_bytes": compute.get("peak_memory_bytes"),
    }
    if "compute_at_patch" in figures:
        at = figures["compute_at_patch"]
        found.update(compute_256_triplets_per_s=at["median"], peak_memory_256_bytes=at.get("peak_memory_bytes"),
                     fits_in_8gb_256=at.get("fits_in_8gb"))
    if "finetuning_polycl_over_stock" in ratios:
        found["finetuning_polycl_over_stock"] = ratios["finetuning_polycl_over_stock"]
    multi = figures.get("multi_process", {})
    found["ddp_scaling_efficiency"] = multi.get("scaling_efficiency", multi.get("skipped"))
    return found


def study_figures(out_dir: str) -> dict | None:
    """Runs and seconds of the study step, from ``polycl_experiment``'s summary line."""
    log = join(out_dir, "logs", "study.log")
    if not isfile(log):
        return None
    with open(log, errors="replace") as f:
        match = re.search(r"Ran (\d+) run\(s\) in (\d+) s", f.read())
    return None if match is None else {"runs": int(match.group(1)), "seconds": int(match.group(2))}


def _mib(value: object) -> str:
    return f"{value / 2 ** 20:,.0f} MiB" if isinstance(value, (int, float)) else "n/a"


def _num(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if isinstance(value, (int, float)) else str(value)


def describe(step: str, figures: dict | None) -> str:
    """The table's figures column for one step."""
    if not figures:
        return ""
    if step == "study":
        return f"{figures['runs']} runs (baseline, S, O at k = 1, seed 0) in {figures['seconds']} s"
    parts = [f"patch {'x'.join(map(str, figures['patch']))}: compute {_num(figures['compute_triplets_per_s'])} "
             f"triplets/s (peak {_mib(figures['peak_memory_bytes'])}), end to end "
             f"{_num(figures['end_to_end_triplets_per_s'])} = {_num(figures['end_to_end_over_compute'])}x compute, "
             f"data path {_num(figures['data_path_over_compute'])}x compute"]
    if "compute_256_triplets_per_s" in figures:
        fits = figures["fits_in_8gb_256"]
        parts.append(f"256x256: compute {_num(figures['compute_256_triplets_per_s'])} triplets/s (peak "
                     f"{_mib(figures['peak_memory_256_bytes'])}{'' if fits is None else f', fits in 8 GB: {fits}'})")
    if "finetuning_polycl_over_stock" in figures:
        parts.append(f"fine-tuning PolyCL / stock {_num(figures['finetuning_polycl_over_stock'])}")
    parts.append(f"2-process DDP scaling efficiency: {_num(figures['ddp_scaling_efficiency'])}")
    return "; ".join(parts)


def summarise(out_dir: str, device: str, gpus: int, tiny: bool) -> dict:
    """Write ``gpu_check.md`` and ``gpu_check.json`` into ``out_dir``; returns the JSON's content."""
    steps = read_steps(out_dir)
    for row in steps:
        if row["step"].startswith("benchmark"):
            row["figures"] = benchmark_figures(join(out_dir, f"{row['step']}.json"))
        elif row["step"] == "study":
            row["figures"] = study_figures(out_dir)
    summary = {"created": datetime.now().isoformat(timespec="seconds"), "device": device, "gpus_visible": gpus,
               "tiny": tiny, "total_seconds": sum(r["seconds"] for r in steps), "steps": steps}
    lines = [f"# GPU check ({device}, {gpus} GPU(s) visible{', tiny settings' if tiny else ''}), "
             f"{summary['created']}, {summary['total_seconds']} s in all", "",
             "| step | status | seconds (limit) | figures |", "|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['status']} | {r['seconds']} ({r['limit_s']}) | "
              f"{describe(r['step'], r.get('figures'))} |" for r in steps]
    with open(join(out_dir, TABLE_FILE), "w") as f:
        f.write("\n".join(lines) + "\n")
    atomic_write_json(summary, join(out_dir, JSON_FILE))
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m nnunet_polycl.benchmark.gpu_check OUT_DIR``: write the summary and print the table."""
    p = argparse.ArgumentParser(prog="python -m nnunet_polycl.benchmark.gpu_check", description=__doc__)
    p.add_argument("out_dir")
    p.add_argument("--device", default="cuda")
    p.add_argument("--gpus", type=int, default=0)
    p.add_argument("--tiny", type=int, default=0)
    args = p.parse_args(argv)
    summarise(args.out_dir, args.device, args.gpus, bool(args.tiny))
    with open(join(args.out_dir, TABLE_FILE)) as f:
        print(f.read(), end="")
    print(f"[gpu_check] summary: {join(args.out_dir, TABLE_FILE)}, {join(args.out_dir, JSON_FILE)}")


if __name__ == "__main__":
    main()
