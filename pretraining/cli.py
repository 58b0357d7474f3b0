"""``polycl_pretrain``: contrastive pre-training of the encoder of a dataset's nnU-Net 2D network.

Three layers as in nnU-Net's ``run_training``: :func:`pretrain_entry` parses arguments only, :func:`run_pretraining`
does the job (typed, callable from Python), helpers in this package do the parts. Every input is validated (dataset,
plans, labels, split, sampler, output folder, checkpoint) before anything is written.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from nnunet_polycl.paths import DEFAULT_STRATEGY, STRATEGIES, PolyCLUserError
from nnunet_polycl.pretraining.settings import PretrainRequest

PROG = "polycl_pretrain"


def pretrain_entry(argv: Sequence[str] | None = None) -> None:
    """Console entry point: parse the arguments, run, print user errors as ``polycl_pretrain: error: ...`` (exit 2)."""
    parser = _parser()
    args = parser.parse_args(argv)
    from nnunet_polycl.pretraining.launch import RankFailedError

    try:
        run_pretraining(
            args.d, plans_identifier=args.p, configuration=args.c, fold=args.f, strategy=args.strategy,
            labels=args.label, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            temperature=args.temperature, embed_dim=args.embed_dim, slice_fraction=args.slice_fraction,
            device=args.device, continue_training=args.continue_training, seed=args.seed,
            num_workers=args.num_workers, output_folder=args.output, overwrite=args.overwrite,
            num_gpus=args.num_gpus, allow_cpu_ddp=args.allow_cpu_ddp, **_unlabelled_settings(args))
    except PolyCLUserError as e:
        parser.exit(2, f"{PROG}: error: {e}\n")
    except RankFailedError as e:
        parser.exit(1, f"{PROG}: error: {e}\n")
    except KeyboardInterrupt:
        sys.exit(130)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="PolyCL contrastive pre-training of the encoder of a dataset's nnU-Net 2D network. "
        "Writes pretrained_weights.pth for nnUNetv2_train -tr nnUNetTrainerPolyCL (or -pretrained_weights).")
    p.add_argument("-d", required=True, metavar="DATASET", help="dataset id or name (e.g. 3 or Dataset003_Liver)")
    p.add_argument("-p", default="nnUNetPlans", metavar="PLANS", help="plans identifier (default: nnUNetPlans)")
    p.add_argument("-c", default="2d", metavar="CONFIGURATION", help="a 2D configuration of the plans (default: 2d)")
    p.add_argument("-f", default="0", metavar="FOLD",
                   help="fold whose training cases are used (default: 0), or 'all' for all cases")
    p.add_argument("-s", "--strategy", default=DEFAULT_STRATEGY, choices=STRATEGIES,
                   help="S: scan-based, O: organ-based (needs labels), M: mixed (needs labels), simclr: SimCLR "
                        f"baseline (default: {DEFAULT_STRATEGY})")
    p.add_argument("--label", nargs="+", default=None, metavar="LABEL",
                   help="O / M: target label name(s) or value(s) from dataset.json (default: any foreground)")
    p.add_argument("--epochs", type=int, default=100,
                   help="epochs; each uses every slice once as an anchor (default: 100)")
    p.add_argument("--batch-size", type=int, default=20, help="triplets (SimCLR: slices) per batch (default: 20)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default: 1e-4)")
    p.add_argument("--temperature", type=float, default=None, help="loss temperature (default: 1 / batch size)")
    p.add_argument("--embed-dim", type=int, default=256, help="embedding size of the projection head (default: 256)")
    p.add_argument("--slice-fraction", type=float, default=1.0,
                   help="use the middle fraction of each scan's slices, in (0, 1] (default: 1.0; paper: 0.3)")
    p.add_argument("-device", default="cuda", choices=("cuda", "cpu", "mps"),
                   help="device, as in nnUNetv2_train (default: cuda; an error if CUDA is not available)")
    p.add_argument("--c", dest="continue_training", action="store_true",
                   help="continue the run in the output folder from its latest checkpoint")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader worker processes per training process (default: min(8, CPUs available / processes), "
                        "at least 1; 0 = load in the main process)")
    p.add_argument("-o", "--output", default=None, metavar="FOLDER",
                   help="output folder (default: $nnUNet_results/DatasetXXX/PolyCL_<strategy>__<plans>__"
                        "<configuration>/fold_<fold>)")
    p.add_argument("--overwrite", action="store_true", help="start again, replacing a run in the output folder")
    p.add_argument("-num_gpus", type=int, default=1,
                   help="GPUs to train on, one process each (torch DDP, as nnUNetv2_train -num_gpus); the global "
                        "--batch-size is split across them (default: 1). Under torchrun: torchrun's process count")
    p.add_argument("--allow-cpu-ddp", action="store_true",
                   help="allow -num_gpus > 1 with -device cpu (gloo; meant for tests, slower than one process)")
    _add_unlabelled_arguments(p)
    return p


def _add_unlabelled_arguments(p: argparse.ArgumentParser) -> None:
    """Unlabelled scans (``nnunet_polycl.unlabelled``) and their organ status for O / M."""
    from nnunet_polycl.unlabelled import DEFAULT_MIN_ORGAN_AREA

    g = p.add_argument_group("unlabelled scans")
    g.add_argument("--unlabelled", nargs="+", default=None, metavar="FOLDER",
                   help="also pre-train on the images in these folders (named as nnU-Net's imagesTs: CASE_0000 plus "
                        "the dataset's file ending, the dataset's channels); preprocessed once with the dataset's "
                        "plans and cached in nnUNet_preprocessed/DatasetXXX/polycl_unlabelled__*")
    g.add_argument("--unlabelled-count", type=int, default=None, metavar="N",
                   help="use only the first N unlabelled scans (folders in the order given, cases sorted by "
                        "identifier), e.g. to measure how the result grows with the number of unlabelled scans "
                        "(default: all)")
    g.add_argument("--organ-slices", default=None, metavar="FILE",
                   help="O / M: weak labels of unlabelled scans, a CSV or JSON with case, first, last (0-based raw "
                        "slice indices of the organ, inclusive)")
    g.add_argument("--organ-status-from", default=None, metavar="RESULTS_FOLDER",
                   help="O / M: organ status of unlabelled scans predicted by this trained nnU-Net model folder "
                        "(e.g. $nnUNet_results/DatasetXXX/nnUNetTrainer__nnUNetPlans__2d)")
    g.add_argument("--organ-status-other-dataset", action="store_true",
                   help="allow a --organ-status-from model of another dataset (organ matched by label name; recorded)")
    g.add_argument("--min-organ-area", type=int, default=DEFAULT_MIN_ORGAN_AREA, metavar="PIXELS",
                   help="pseudo-labels: least predicted organ pixels inside the encoder's crop for a slice to count "
                        f"as containing the organ (default: {DEFAULT_MIN_ORGAN_AREA})")
    g.add_argument("-np", type=int, default=None, metavar="N",
                   help="processes preprocessing the unlabelled scans (default: nnU-Net's default_num_processes, "
                        "8 unless nnUNet_def_n_proc is set)")


def _unlabelled_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"unlabelled": args.unlabelled, "organ_slices": args.organ_slices,
            "organ_status_from": args.organ_status_from, "organ_status_other_dataset": args.organ_status_other_dataset,
            "min_organ_area": args.min_organ_area, "num_processes": args.np, "unlabelled_count": args.unlabelled_count}


def run_pretraining(dataset: str | int, **settings: Any) -> str:
    """Pre-train the encoder of ``dataset``'s 2D nnU-Net network; returns the output folder.

    ``settings`` are the fields of :class:`~nnunet_polycl.pretraining.settings.PretrainRequest` (the command's
    options: ``plans_identifier``, ``configuration``, ``fold``, ``strategy``, ``labels``, ``epochs``, ...).

    Raises:
        PolyCLUserError: any invalid input (nothing is written in that case), a corrupted checkpoint on --c, or a
            diverging loss (the last good checkpoint is kept).
        RankFailedError: a process of a multi-process run died (the last good checkpoint is kept).
        TypeError: an unknown setting name.
    """
    from nnunet_polycl.pretraining.launch import run_request

    return run_request(PretrainRequest(dataset, **settings))
