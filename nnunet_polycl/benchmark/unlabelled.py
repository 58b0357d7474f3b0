"""Benchmark figures of the unlabelled-data stage, run by hand (``python -m nnunet_polycl.benchmark.unlabelled``).

- ``index``: build the slice index of labelled + unlabelled scans (per-scan status arrays -> index, concatenation,
  O's subset of slices with a status) and draw one epoch of triplets for S, O and M, at several sizes up to 10^6
  slices: wall time, peak memory (``tracemalloc``, which sees NumPy's allocations) and time / (N log2 N), which stays
  flat when the work is O(N log N).
- ``preprocess -d DATASET``: preprocess the same raw images with nnU-Net's own ``DefaultPreprocessor.run`` (what
  ``nnUNetv2_preprocess`` runs, in this process, same ``-np``) and with the unlabelled pipeline (image checksums +
  cached preprocessing), alternating, in scratch copies of the dataset; reports the speed ratio (target >= 0.9).
Timings depend on the machine's load, which is printed (``os.getloadavg``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from functools import partial
from os.path import join

import numpy as np

from nnunet_polycl.slice_index import SliceIndex, index_from_statuses

SLICES_PER_SCAN = 100
SETTLE_S = 3.0  # pause between timed preprocessing runs


def _timed(work: Callable[[], object]) -> tuple[object, float, int]:
    """(result, seconds, peak bytes allocated while it ran)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = work()
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, seconds, peak


def synthetic_statuses(n_slices: int, seed: int = 0) -> tuple[list, list]:
    """Per-scan (organ, known) arrays for ``n_slices`` slices: half labelled scans, half unlabelled ones of which
    a third have no status (like scans without weak label or pseudo-label)."""
    rng = np.random.default_rng(seed)
    n_scans = max(2, n_slices // SLICES_PER_SCAN)
    statuses = []
    for scan in range(n_scans):
        z = np.arange(SLICES_PER_SCAN)
        lo = rng.integers(5, 40)
        organ = (z >= lo) & (z < lo + rng.integers(20, 50))
        known = np.ones(SLICES_PER_SCAN, dtype=bool) if scan % 2 == 0 or scan % 3 else np.zeros_like(organ)
        statuses.append((organ & known, known))
    return statuses[0::2], statuses[1::2]


def build_index(labelled: list, unlabelled: list) -> tuple[SliceIndex, SliceIndex]:
    """The combined index (all slices, for S) and O / M's index (unlabelled slices without status left out)."""
    parts = [index_from_statuses([f"{kind}_{i}" for i in range(len(st))], [kind] * len(st), st)
             for kind, st in (("labelled", labelled), ("unlabelled", unlabelled))]
    everything = SliceIndex.concatenate(parts)
    return everything, SliceIndex.concatenate([parts[0], parts[1].subset(parts[1].organ_known)])


def index_figures(sizes: Sequence[int]) -> list[dict]:
    """Time and peak memory of building the index and of one epoch of each sampler, per size."""
    from nnunet_polycl.pretraining.slice_data import EpochBatchSampler
    from nnunet_polycl.sampling import make_sampler

    rows = []
    for n in sizes:
        labelled, unlabelled = synthetic_statuses(n)
        (everything, organ_index), build_s, build_peak = _timed(partial(build_index, labelled, unlabelled))
        row = {"slices": len(everything), "index_bytes": sum(getattr(everything, k).nbytes for k in
                                                              ("scan", "z", "organ", "organ_known")),
               "build_s": build_s, "build_peak_bytes": build_peak}
        for strategy in ("S", "O", "M"):
            index = everything if strategy == "S" else organ_index

            def epoch(index=index, strategy=strategy):
                sampler = make_sampler(strategy, index, seed=0)
                batches = EpochBatchSampler(sampler.triplets, len(index), 20)
                return sum(len(request.rows) for request in batches)

            served, seconds, peak = _timed(epoch)
            assert served == len(index)  # every slice an anchor once
            row.update({f"{strategy}_epoch_s": seconds, f"{strategy}_peak_bytes": peak,
                        f"{strategy}_ns_per_nlogn": seconds / (len(index) * math.log2(len(index))) * 1e9})
        rows.append(row)
    return rows


def _scratch_dataset(dataset: str, copies: int, scratch: str) -> tuple[str, list[list[str]]]:
    """A scratch nnU-Net root with the dataset's raw training images (``copies`` times each) and its plans."""
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    from nnunet_polycl.network import load_plans_context
    from nnunet_polycl.paths import resolve_dataset_name

    ctx = load_plans_context(resolve_dataset_name(dataset), require_data=False)
    raw_in = join(os.environ["nnUNet_raw"], ctx.dataset_name)
    raw_out, pre_out = join(scratch, "raw", ctx.dataset_name), join(scratch, "preprocessed", ctx.dataset_name)
    for sub in ("imagesTr", "labelsTr"):
        os.makedirs(join(raw_out, sub))
    os.makedirs(pre_out)
    for name in ("dataset.json", ctx.plans_identifier + ".json"):
        shutil.copy(join(ctx.preprocessed_folder, name), join(pre_out, name))
    shutil.copy(join(raw_in, "dataset.json"), join(raw_out, "dataset.json"))
    ending, images = ctx.dataset_json["file_ending"], []
    for case, entry in sorted(get_filenames_of_train_images_and_targets(raw_in, ctx.dataset_json).items()):
        for k in range(copies):
            name = f"{case}c{k}"
            files = [join(raw_out, "imagesTr", f"{name}_{c:04d}{ending}") for c in range(len(entry["images"]))]
            for src, dst in zip(entry["images"], files, strict=True):
                shutil.copy(src, dst)
            shutil.copy(entry["label"], join(raw_out, "labelsTr", name + ending))
            images.append(files)
    return ctx.dataset_name, images


def preprocess_figures(dataset: str, num_processes: int, copies: int, repeats: int) -> dict:
    """nnU-Net's DefaultPreprocessor.run against the unlabelled pipeline on the same images, alternating."""
    from nnunet_polycl.checkpoint import file_sha256
    from nnunet_polycl.environment import temporary_environment
    from nnunet_polycl.network import load_plans_context
    from nnunet_polycl.unlabelled.cache import UnlabelledCache
    from nnunet_polycl.unlabelled.checksums import ChecksumMemo
    from nnunet_polycl.unlabelled.discovery import discover_folder
    from nnunet_polycl.unlabelled.preprocess import preprocess_cases

    scratch = tempfile.mkdtemp(prefix="polycl_unlabelled_benchmark_")
    try:
        name, images = _scratch_dataset(dataset, copies, scratch)
        with temporary_environment({"nnUNet_raw": join(scratch, "raw"),
                                    "nnUNet_preprocessed": join(scratch, "preprocessed")}):
            ctx = load_plans_context(name, require_data=False)
            nnunet, ours = [], []
            for _ in range(repeats):
                preprocessor = ctx.configuration_manager.preprocessor_class(verbose=False)
                preprocessor.show_progress_bar = False
                start = time.perf_counter()
                preprocessor.run(name, ctx.configuration, ctx.plans_identifier, num_processes)
                nnunet.append(time.perf_counter() - start)
                time.sleep(SETTLE_S)
                cache = UnlabelledCache(ctx, join(scratch, "raw", name, "imagesTr"))
                shutil.rmtree(cache.root, ignore_errors=True)
                start = time.perf_counter()
                memo = ChecksumMemo(scratch)  # a fresh memo: every file is hashed, the worst case
                cases = [(c, memo.image_checksum(c.files)) for c in discover_folder(cache.source, ctx.dataset_json)]
                preprocess_cases(ctx, cache, cases, file_sha256(join(ctx.preprocessed_folder,
                                                                     ctx.plans_identifier + ".json")), num_processes)
                ours.append(time.perf_counter() - start)
                time.sleep(SETTLE_S)  # the idle workers exit in the background: not during the next timing
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    nn, un = statistics.median(nnunet), statistics.median(ours)
    return {"dataset": name, "cases": len(images), "num_processes": num_processes, "repeats": repeats,
            "nnunet_preprocess_s": nnunet, "unlabelled_s": ours, "median_nnunet_s": nn, "median_unlabelled_s": un,
            "speed_ratio": nn / un}


def _print_index(rows: list[dict]) -> None:
    print(f"{'slices':>9}  {'step':<30} {'seconds':>8} {'peak MiB':>9} {'ns / (N log2 N)':>16}")
    for r in rows:
        n = r["slices"]
        print(f"{n:>9}  {'index (' + format(r['index_bytes'] / 2**20, '.1f') + ' MiB of arrays)':<30} "
              f"{r['build_s']:>8.3f} {r['build_peak_bytes'] / 2**20:>9.1f} "
              f"{r['build_s'] / (n * math.log2(n)) * 1e9:>16.2f}")
        for s in "SOM":
            print(f"{'':>9}  {'epoch of ' + s + ' (sampler + batches)':<30} {r[f'{s}_epoch_s']:>8.3f} "
                  f"{r[f'{s}_peak_bytes'] / 2**20:>9.1f} {r[f'{s}_ns_per_nlogn']:>16.2f}")


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: ``index [--sizes N ...]`` or ``preprocess -d DATASET [-np N] [--copies K] [--repeats R]``."""
    p = argparse.ArgumentParser(prog="python -m nnunet_polycl.benchmark.unlabelled", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="figure", required=True)
    idx = sub.add_parser("index", help="slice index and samplers at up to 10^6 slices")
    idx.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**5, 10**6])
    pre = sub.add_parser("preprocess", help="preprocessing speed against nnU-Net's preprocessor")
    pre.add_argument("-d", required=True, metavar="DATASET", help="dataset with raw images and plans")
    pre.add_argument("-np", type=int, default=2, help="processes, for both (default: 2)")
    pre.add_argument("--copies", type=int, default=1, help="copies of each raw case, to scale the work (default 1)")
    pre.add_argument("--repeats", type=int, default=3, help="alternating timed repeats, median (default: 3)")
    p.add_argument("-o", default=None, metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args(argv)
    load = os.getloadavg()
    print(f"load average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; CPUs: {os.cpu_count()}")
    if args.figure == "index":
        index_figures([1000])  # warm-up: imports and first-call costs are not part of the figures
        result = {"index": index_figures(args.sizes)}
        _print_index(result["index"])
    else:
        result = {"preprocess": preprocess_figures(args.d, args.np, args.copies, args.repeats)}
        r = result["preprocess"]
        print(f"{r['cases']} cases, -np {r['num_processes']}: nnU-Net's preprocessor {r['median_nnunet_s']:.2f} s, "
              f"unlabelled pipeline {r['median_unlabelled_s']:.2f} s (median of {r['repeats']}): speed ratio "
              f"{r['speed_ratio']:.3f} (target >= 0.9)")
    result["load_average"] = list(load)
    if args.o:
        with open(args.o, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
