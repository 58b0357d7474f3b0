"""``polycl_experiment``: the paper's protocol (Table 1 and Fig. 4) on one dataset and fold, in one command."""
from __future__ import annotations

import argparse
import sys

from nnunet_polycl.evaluation.reports import PAIRINGS
from nnunet_polycl.evaluation.statistics import INTERVALS
from nnunet_polycl.experiment.cases import read_case_list
from nnunet_polycl.experiment.presets import METHODS, PRESETS, PRETRAINING_SEEDS, SCHEDULES
from nnunet_polycl.experiment.process import StoppedBySignal, stop_steps_on_signals
from nnunet_polycl.experiment.runner import ExperimentRequest, ExperimentResult, run_experiment
from nnunet_polycl.finetuning.adaptation import ADAPTATIONS
from nnunet_polycl.paths import RAW_ORGAN_SLICES_FILE, RAW_UNLABELLED_FOLDER, PolyCLUserError


def _preset_help() -> str:
    lines = []
    for p in PRESETS.values():
        s = p.settings
        lines.append(f"{p.name} ({p.description}): methods {' '.join(p.methods)}; seeds "
                     f"{' '.join(map(str, p.seeds))}; k {' '.join(map(str, p.ks))}; pre-training {s.pretrain_epochs} "
                     f"epochs, batch {s.pretrain_batch_size}, lr {s.pretrain_lr:g}, slice fraction {s.slice_fraction}, "
                     f"{s.pretraining_seeds} pre-training seeds; fine-tuning schedule {s.schedule}"
                     + ("" if p.adaptations == ("default",) else f", adaptations {' '.join(p.adaptations)}")
                     + f"; device {p.device}; {p.jobs} parallel job(s)" + ("; unlabelled scans" if p.unlabelled else ""))
    return ". ".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="polycl_experiment",
        description="Run the PolyCL paper's protocol: methods x seeds x label budgets k; each run pre-trains "
                    "(polycl_pretrain, shared by all k), fine-tunes (nnUNetv2_train), predicts the evaluated cases "
                    "(nnUNetv2_predict) and evaluates them (Dice, HD, HD95 in mm). Writes Table 1 (markdown, CSV), "
                    "Fig. 4 (PNG) and every number (JSON). Run the same command again to continue: finished runs "
                    f"are skipped. Presets: {_preset_help()}.")
    p.add_argument("-d", dest="dataset", required=True, help="dataset name or id (preprocessed with -c 2d)")
    p.add_argument("-f", dest="fold", default="0", help="fold to fine-tune and evaluate (default 0; 'all' possible)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    p.add_argument("--preset", default="demo", choices=list(PRESETS), help="protocol preset (default demo)")
    p.add_argument("--methods", nargs="+", default=None, metavar="M",
                   help=f"methods among {' '.join(METHODS)} (default: the preset's)")
    p.add_argument("--adaptations", nargs="+", default=None, metavar="A",
                   help=f"how the encoder is fine-tuned, among default {' '.join(ADAPTATIONS)} (trainer suffixes; "
                        f"'default' = the trainer's default), for every method, or METHOD=A for one method only "
                        f"(e.g. 'default O=layerwise': the baseline on the default, O layer-wise; a method with an "
                        f"item of its own runs only those). Default: the preset's")
    p.add_argument("--seeds", nargs="+", type=int, default=None, metavar="S",
                   help="seeds, one run per seed; a seed fixes the labelled subset, the pre-training and the "
                        "fine-tuning randomness (default: the preset's)")
    p.add_argument("--k", nargs="+", default=None, metavar="K", dest="ks",
                   help="label budgets: 'all' and/or numbers of labelled training scans (default: the preset's)")
    p.add_argument("--test-cases", nargs="+", default=None, metavar="CASE",
                   help="evaluate these cases (from imagesTr/imagesTs, with labels) or the cases listed in a file, "
                        "one per line (default: the fold's validation cases)")
    p.add_argument("-o", dest="output_folder", default=None,
                   help="experiment folder (default $nnUNet_results/<dataset>/PolyCL_experiment__<preset>__fold_<f>, "
                        "with __N<n> or __Nall before __fold_ when pre-training uses unlabelled scans)")
    p.add_argument("-device", default=None, choices=["cpu", "cuda", "mps"],
                   help="device of every step (default: the preset's: demo cpu, paper cuda)")
    p.add_argument("--pretrain-epochs", type=int, default=None, help="override the preset's pre-training epochs")
    p.add_argument("--batch-size", type=int, default=None, help="override the preset's pre-training batch size")
    p.add_argument("--pretrain-lr", type=float, default=None,
                   help="override the preset's pre-training learning rate (demo and study 1e-3, paper 1e-4)")
    p.add_argument("--slice-fraction", type=float, default=None,
                   help="override the preset's pre-training slice fraction (middle part of each scan)")
    p.add_argument("--schedule", default=None, choices=list(SCHEDULES),
                   help="override the preset's fine-tuning schedule (trainer suffix; 'default' = nnU-Net's)")
    p.add_argument("--pretraining-seeds", default=None, choices=PRETRAINING_SEEDS,
                   help="per-seed: every seed pre-trains its own encoder; shared: one pre-training (first seed) "
                        "serves all seeds, and the reports say that its randomness is not sampled (default: the "
                        "preset's)")
    p.add_argument("--pair-by", default=None, choices=list(PAIRINGS),
                   help="run (default): compare methods over runs paired by seed; case: per-case pairing, an "
                        "explicit option labelled as such (cases of one run are not independent)")
    p.add_argument("--interval", default=None, choices=list(INTERVALS),
                   help="95%% confidence interval of Fig. 4's means: t (default) or bootstrap over seeds; bootstrap "
                        "also adds a percentile-bootstrap column to the paired differences (too narrow at small n). "
                        "Verdicts always follow the t-interval and the Holm-adjusted t-test")
    p.add_argument("--pretrained", nargs="+", default=None, metavar="METHOD=FILE",
                   help="fine-tune METHOD from an existing pretrained_weights.pth for every seed instead of "
                        "pre-training it (e.g. O=$nnUNet_results/.../PolyCL_O__nnUNetPlans__2d/fold_0/"
                        "pretrained_weights.pth); its sha256 is part of the experiment's identity, and the reports "
                        "say that the pre-training's randomness is not sampled")
    p.add_argument("--unlabelled", default=None, metavar="FOLDER",
                   help="every pre-training also uses the unlabelled scans in FOLDER (named as nnU-Net's imagesTs; "
                        "polycl_pretrain --unlabelled). Default: none; preset unlabelled: "
                        f"$nnUNet_raw/<dataset>/{RAW_UNLABELLED_FOLDER}, as polycl_demo make-dataset --unlabelled N "
                        "writes it")
    p.add_argument("--organ-slices", default=None, metavar="FILE",
                   help="weak organ labels of the unlabelled scans (case,first,last) for O and M; O-pseudo uses "
                        "pseudo-labels of the same seed's k-scan baseline instead. Default: none; preset unlabelled: "
                        f"$nnUNet_raw/<dataset>/{RAW_ORGAN_SLICES_FILE} when present")
    p.add_argument("--unlabelled-count", type=int, default=None, metavar="N",
                   help="use only the first N unlabelled scans (sorted by name; 0: the labelled scans only), e.g. "
                        "for a sweep over N, one experiment folder per N (default: all)")
    p.add_argument("--budgets", nargs="+", default=None, metavar="F",
                   help="also evaluate every run at these fractions of its schedule's iterations (in (0, 1], 1 always "
                        "included; e.g. 0.25 0.5 1), from the checkpoints saved at those points of the same run "
                        "(rounded to the nearest epoch, at least 1), predicted and evaluated exactly as the end point. "
                        "Writes budgets.md/.csv/.json and fig_budgets.png and labels every comparison by whether the "
                        "baseline reached the end of its training (needs the budget 0.5). Part of the experiment's "
                        "identity (default: 0.5 1, every preset; --budgets 1: the end point only, not checked)")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs at a time (each step is a subprocess; default: the preset's)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="data-loading workers of pre-training and prediction processes (default: the preset's)")
    p.add_argument("--augmentation-workers", type=int, default=None, metavar="N",
                   help="nnU-Net's data-augmentation workers (nnUNet_n_proc_DA) of every fine-tuning, fixed because "
                        "the worker count changes what a seed draws; recorded in experiment.json and each run "
                        "(default: the preset's: demo 0, study 2, paper 8)")
    p.add_argument("--cpu-threads", type=int, default=None, metavar="N",
                   help="torch threads of every step on the CPU, fixed because the thread count changes the weights "
                        "a seed gives; recorded in experiment.json (default 1; --jobs adds parallel runs)")
    p.add_argument("--force-mix", action="store_true",
                   help="add runs to an experiment folder made with other settings (default: refuse)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (step and run lines still print)")
    return p


def _summary(result: ExperimentResult) -> str:
    lines = [f"Experiment folder: {result.folder}",
             f"Ran {len(result.ran)} run(s) in {result.seconds:.0f} s; {len(result.skipped)} run(s) were already "
             f"finished and skipped."]
    lines += [f"  {name}: {path}" for name, path in result.reports.items()]
    for report in ("budgets_md", "table1_md", "verdict_md"):
        if report in result.reports:
            with open(result.reports[report]) as f:
                lines += ["", f.read()]
    verdict = result.reports.get("verdict_md")
    lines.append(f"Verdict: {verdict} (Table 1 and Fig. 4 beside it)" if verdict else
                 f"No verdict yet (it needs finished baseline runs): reports in {result.folder}")
    return "\n".join(line.rstrip("\n") for line in lines)


def parse_given_weights(values: list[str] | None) -> dict[str, str] | None:
    """``["O=/path/a.pth", ...]`` -> ``{"O": "/path/a.pth"}``; raises PolyCLUserError for another form."""
    if not values:
        return None
    bad = [v for v in values if "=" not in v or not v.split("=", 1)[0] or not v.split("=", 1)[1]]
    if bad:
        raise PolyCLUserError(f"--pretrained expects METHOD=FILE (e.g. O=pretrained_weights.pth), got {bad[0]!r}.")
    return dict(v.split("=", 1) for v in values)


def experiment_entry(argv: list[str] | None = None) -> None:
    """Command line of ``polycl_experiment``."""
    args = build_parser().parse_args(argv)
    stop_steps_on_signals()
    try:
        request = ExperimentRequest(
            dataset=args.dataset, fold=args.fold, preset=args.preset,
            methods=tuple(args.methods) if args.methods else None,
            adaptations=tuple(args.adaptations) if args.adaptations else None,
            seeds=tuple(args.seeds) if args.seeds is not None else None,
            ks=tuple(args.ks) if args.ks else None,
            test_cases=read_case_list(args.test_cases) if args.test_cases else None,
            output_folder=args.output_folder, device=args.device, plans_identifier=args.plans,
            pretrain_epochs=args.pretrain_epochs, pretrain_batch_size=args.batch_size, pretrain_lr=args.pretrain_lr,
            slice_fraction=args.slice_fraction, schedule=args.schedule, pretraining_seeds=args.pretraining_seeds,
            pair_by=args.pair_by, interval=args.interval, num_workers=args.num_workers, jobs=args.jobs,
            augmentation_workers=args.augmentation_workers, cpu_threads=args.cpu_threads,
            pretrained=parse_given_weights(args.pretrained), unlabelled=args.unlabelled,
            organ_slices=args.organ_slices, unlabelled_count=args.unlabelled_count,
            budgets=tuple(args.budgets) if args.budgets else None,
            force_mix=args.force_mix, progress=not args.no_progress)
        result = run_experiment(request)
    except PolyCLUserError as e:
        print(f"polycl_experiment: error: {e}", file=sys.stderr)
        sys.exit(1)
    except StoppedBySignal as e:
        ended = f"; ended its running steps ({', '.join(e.ended)})" if e.ended else ""
        print(f"polycl_experiment: {e}{ended}. Finished runs are kept; run the same command again to continue.",
              file=sys.stderr)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:
        print("polycl_experiment: interrupted. Finished runs are kept; run the same command again to continue.",
              file=sys.stderr)
        sys.exit(130)
    print(_summary(result))
