"""What ``polycl_benchmark`` reports: the machine, the headline ratios against the issue's targets, the table."""
from __future__ import annotations

import os
import platform
import sys

import torch

from nnunet_polycl.benchmark.stats import paired_ratio, ratio
from nnunet_polycl.environment import available_cpus

# Targets of the performance issues: the data path must be this many times faster than the compute, and the
# end-to-end loop must reach this share of the pure compute speed. The multi-process scaling efficiency has none.
TARGETS = {"data_path_over_compute": 3.0, "end_to_end_over_compute": 0.95}
GIB = 1024 ** 3
BUDGET_8GB_BYTES = 8 * GIB
CUDA_CONTEXT_ALLOWANCE = GIB // 2  # the CUDA context and cuDNN workspaces, not seen by the caching allocator


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0], "torch": torch.__version__}
    for package in ("nnunetv2", "nnunet-polycl"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def machine_info(device: torch.device) -> dict:
    """Device, CPU, core count, torch threads, load average and versions."""
    cpus = available_cpus()
    info = {"device": device.type, "cpu": _cpu_name(), "cpus_available": cpus,
            "torch_threads": torch.get_num_threads(), "versions": _versions()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_bytes=int(props.total_memory))
    return info


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where unavailable)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def headline(figures: dict) -> dict:
    """The ratios and whether they meet :data:`TARGETS`.

    Data path and end to end against compute: paired (their repeats ran interleaved with the compute's);
    fine-tuning PolyCL against stock: ratio of the medians (the trainers ran one after the other).
    """
    compute = figures["compute"]["per_repeat"]
    ratios = {"data_path_over_compute": paired_ratio(figures["data_path"]["per_repeat"], compute),
              "end_to_end_over_compute": paired_ratio(figures["end_to_end"]["per_repeat"], compute)}
    if "finetuning" in figures:
        ft = figures["finetuning"]
        ratios["finetuning_polycl_over_stock"] = ratio(ft["polycl"]["median"], ft["stock"]["median"])
    if "scaling_efficiency" in figures.get("multi_process", {}):
        ratios["multi_process_scaling_efficiency"] = figures["multi_process"]["scaling_efficiency"]
    met = {name: ratios[name] >= target for name, target in TARGETS.items()}
    return {"ratios": ratios, "targets": TARGETS, "targets_met": met}


def fits_in_8gb(figure: dict) -> bool | None:
    """CUDA only: whether the reserved peak plus the context allowance stays within 8 GiB."""
    reserved = figure.get("peak_reserved_bytes")
    return None if reserved is None else reserved + CUDA_CONTEXT_ALLOWANCE <= BUDGET_8GB_BYTES


def _memory(figure: dict) -> str:
    peak = figure.get("peak_memory_bytes")
    return "" if peak is None else f"{peak / 2 ** 20:,.0f} MiB"


def _row(label: str, figure: dict, per_repeat: str) -> str:
    spread = f"{min(figure['per_repeat']):.4g}-{max(figure['per_repeat']):.4g}"
    return (f"{label:<42}{figure['median']:>12.4g} {figure['unit']:<13}{spread:>19}  "
            f"{figure['steps_per_repeat']:>6} {per_repeat:<11}{_memory(figure):>12}")


def _multi_process_rows(figure: dict | None) -> list[str]:
    if figure is None:
        return []
    if "skipped" in figure:
        return [f"{'5 multi-process':<42}skipped: {figure['skipped']}"]
    n, backend = figure["processes"], figure["backend"]
    return [_row(f"5 multi-process, 1 process ({backend})", figure["one_process"], "steps"),
            _row(f"5 multi-process, {n} processes ({backend})", figure["n_processes"], "steps")]


def format_table(result: dict) -> str:
    """The human-readable table: one row per figure, then the ratios."""
    f, s = result["figures"], result["settings"]
    lines = [f"{'figure':<42}{'median':>12} {'unit':<13}{'min-max (repeats)':>19}  {'per repeat':<18}"
             f"{'peak memory':>12}",
             _row("1 pure compute", f["compute"], "steps"),
             _row("2 data path", f["data_path"], "batches"),
             _row("3 end to end", f["end_to_end"], "steps")]
    if "finetuning" in f:
        lines += [_row(f"4 fine-tuning {f['finetuning']['stock']['trainer']}", f["finetuning"]["stock"], "iterations"),
                  _row(f"4 fine-tuning {f['finetuning']['polycl']['trainer']}", f["finetuning"]["polycl"],
                       "iterations")]
    lines += _multi_process_rows(f.get("multi_process"))
    if "compute_at_patch" in f:
        p = f["compute_at_patch"]
        lines.append(_row(f"  compute at {p['patch_size'][0]}x{p['patch_size'][1]}", p, "steps"))
        if fits_in_8gb(p) is not None:
            lines.append(f"  fits in 8 GB of GPU memory: {fits_in_8gb(p)} (reserved "
                         f"{p['peak_reserved_bytes'] / GIB:.2f} GiB + {CUDA_CONTEXT_ALLOWANCE / GIB:.1f} GiB context)")
    lines.append(f"(medians over {s['repeats']} repeats; ratios to compute: median of the per-repeat ratios)")
    r = result["headline"]
    for name, value in r["ratios"].items():
        target = r["targets"].get(name)
        verdict = "" if target is None else f"   target >= {target:g}: {'met' if r['targets_met'][name] else 'NOT met'}"
        lines.append(f"{'ratio ' + name.replace('_', ' '):<42}{value:>12.3f}{verdict}")
    return "\n".join(lines)
