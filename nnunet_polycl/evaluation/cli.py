"""``polycl_evaluate``: Dice, HD and HD95 (mm) of a prediction folder against a reference folder."""
from __future__ import annotations

import argparse
import sys
from os.path import join

from nnunetv2.configuration import default_num_processes

from nnunet_polycl.paths import PolyCLUserError

DEFAULT_OUTPUT_SUBFOLDER = "polycl_evaluation"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polycl_evaluate",
        description="Volumetric Dice, Hausdorff distance (max) and HD95 in mm, per case and label, of the "
                    "segmentations in PRED_FOLDER against those with the same file name in REF_FOLDER. Writes "
                    "summary.json, summary.csv and summary.md.")
    parser.add_argument("-ref", required=True, metavar="REF_FOLDER", help="folder with the reference segmentations")
    parser.add_argument("-pred", required=True, metavar="PRED_FOLDER", help="folder with the predicted segmentations")
    parser.add_argument("-djfile", required=True, help="dataset.json (file_ending and labels)")
    parser.add_argument("-o", default=None, metavar="OUT_FOLDER",
                        help=f"output folder (default: PRED_FOLDER/{DEFAULT_OUTPUT_SUBFOLDER}, so that nnU-Net's "
                             f"own summary.json is left alone)")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="label names or values from dataset.json to evaluate (default: all foreground labels "
                             "or regions)")
    parser.add_argument("--intersection", action="store_true",
                        help="evaluate the cases present in both folders instead of failing when some are missing")
    parser.add_argument("-np", type=int, default=default_num_processes,
                        help=f"number of processes (default: {default_num_processes}, nnU-Net's default)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing summary files in OUT_FOLDER")
    return parser


def evaluate_entry(argv: list[str] | None = None) -> None:
    """Command line of ``polycl_evaluate``."""
    from nnunet_polycl.evaluation.folders import evaluate_folders

    parser = _parser()
    args = parser.parse_args(argv)
    if args.np < 1:
        parser.error(f"-np must be at least 1, got {args.np}")
    output = args.o or join(args.pred, DEFAULT_OUTPUT_SUBFOLDER)
    try:
        summary = evaluate_folders(args.ref, args.pred, args.djfile, output, labels=args.labels,
                                   intersection=args.intersection, num_processes=args.np, overwrite=args.overwrite)
    except PolyCLUserError as e:
        print(f"polycl_evaluate: error: {e}", file=sys.stderr)
        sys.exit(1)
    for label, agg in summary["aggregates"].items():
        dice, hd95 = agg["dice"]["mean"], agg["hd95"]["mean"]
        print(f"{label}: Dice {'n/a' if dice is None else f'{dice:.4f}'} over {agg['dice']['n']} cases, "
              f"HD95 {'n/a' if hd95 is None else f'{hd95:.2f} mm'} over {agg['hd95']['n']} cases")
    print(f"Summary written to {output} (summary.json, summary.csv, summary.md)")
