"""``polycl_demo``: commands around the built-in synthetic demo dataset."""
from __future__ import annotations

import argparse
import sys
from os.path import basename

from nnunet_polycl.demo.dataset import DEFAULT_NUM_SCANS, DEMO_DATASET_ID, MIN_NUM_SCANS, DemoDataset, make_demo_dataset
from nnunet_polycl.paths import RAW_ORGAN_SLICES_FILE, RAW_UNLABELLED_FOLDER, PolyCLUserError


def _stale_warning(folder: str, new_name: str, what: str, fix: str) -> str:
    if basename(folder) != new_name:
        fix = "remove or rename it: nnU-Net cannot resolve an id that two dataset names share"
    return f"WARNING: {folder} holds {what} of the replaced dataset and is stale; {fix}."


def _unlabelled_lines(result: DemoDataset) -> list[str]:
    if not result.num_unlabelled:
        return []
    return [f"Wrote {result.num_unlabelled} unlabelled scans of the same generator (never labelled ones) to "
            f"{result.unlabelled_folder}",
            f"Their weak organ labels (first and last slice with the liver) for --organ-slices: "
            f"{result.organ_slices_file}"]


def _report(result: DemoDataset, dataset_id: int) -> str:
    """Human-readable summary of a finished ``make-dataset`` run, ending with the next command."""
    name = basename(result.folder)
    if result.kept_labelled:
        lines = [f"Kept the {result.num_scans} labelled scans of {result.folder} (same seed and number of scans)"]
    else:
        lines = [f"Wrote {result.num_scans} synthetic CT scans (label 1 = liver) to {result.folder}"]
    lines += _unlabelled_lines(result)
    lines += [f"Replaced the previous raw dataset {old}" for old in result.replaced]
    lines += [_stale_warning(old, name, "preprocessed data", "the next command rewrites it")
              for old in result.stale_preprocessed]
    lines += [_stale_warning(old, name, "results", "it was kept: move or delete it before training on the new data")
              for old in result.stale_results]
    if result.kept_labelled:
        lines.append(f"Next (once the dataset is preprocessed): polycl_experiment -d {dataset_id} --preset "
                     f"unlabelled, or polycl_pretrain -d {dataset_id} --unlabelled {result.unlabelled_folder} "
                     f"--organ-slices {result.organ_slices_file}")
    else:
        lines.append(f"Next: nnUNetv2_plan_and_preprocess -d {dataset_id} -c 2d --verify_dataset_integrity")
    return "\n".join(lines)


def _add_make_dataset(subparsers) -> None:
    p = subparsers.add_parser(
        "make-dataset", help="write the synthetic demo dataset into nnUNet_raw",
        description="Write a small synthetic abdominal CT dataset (liver-like target organ, present in only part "
                    "of each scan's slices) in nnU-Net's raw format to <raw>/Dataset<ID>_PolyCLDemo.")
    p.add_argument("-d", "--dataset-id", type=int, default=DEMO_DATASET_ID,
                   help=f"nnU-Net dataset id (default {DEMO_DATASET_ID})")
    p.add_argument("--num-scans", type=int, default=DEFAULT_NUM_SCANS,
                   help=f"number of scans (default {DEFAULT_NUM_SCANS}, at least {MIN_NUM_SCANS})")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same data (default 0)")
    p.add_argument("--raw", default=None, metavar="FOLDER",
                   help="nnU-Net raw folder to write into (default: $nnUNet_raw)")
    p.add_argument("--unlabelled", type=int, default=0, metavar="N",
                   help="also write N further scans of the same generator, never labelled ones, as the dataset's "
                        f"unlabelled folder <raw>/Dataset<ID>_PolyCLDemo/{RAW_UNLABELLED_FOLDER}/ (named as "
                        f"imagesTs) with their weak organ labels in {RAW_ORGAN_SLICES_FILE} beside it (the CSV "
                        "polycl_pretrain --organ-slices reads). Added to an existing demo dataset of the same --seed "
                        "and --num-scans without touching its labelled scans (default: 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing raw dataset with this id (default: refuse). Preprocessed data and "
                        "results of this id are kept and reported as stale. With --unlabelled on the demo dataset of "
                        "the same seed and number of scans: replace only its unlabelled scans")


def demo_entry(argv: list[str] | None = None) -> None:
    """Command line of ``polycl_demo``."""
    parser = argparse.ArgumentParser(prog="polycl_demo", description="The PolyCL synthetic demo dataset.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_make_dataset(subparsers)
    args = parser.parse_args(argv)
    try:
        result = make_demo_dataset(args.dataset_id, args.num_scans, args.seed, args.raw, args.overwrite,
                                   args.unlabelled)
    except PolyCLUserError as e:
        print(f"polycl_demo {args.command}: error: {e}", file=sys.stderr)
        sys.exit(1)
    print(_report(result, args.dataset_id))
