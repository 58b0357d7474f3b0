"""``polycl_probe``: does a pre-trained encoder tell its strategy's triplets apart on scans it never saw?

Scores the triplet accuracy of a ``polycl_pretrain`` run on the fold's validation cases (default) against randomly
initialised encoders on the same triplets, prints the result and writes it to ``probe.json`` in the run folder, with
a picture of the embeddings beside a random encoder's (``embeddings.png``, its data in ``embeddings.json``). A
pre-trained encoder that does not beat every random encoder has learnt nothing that transfers to new scans (on small
datasets, too many epochs or too low a learning rate let the encoder memorise its training scans instead).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from os.path import join

from nnunet_polycl.checkpoint import atomic_write_json
from nnunet_polycl.paths import PolyCLUserError

PROG = "polycl_probe"
PROBE_FILE = "probe.json"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="output folder of a polycl_pretrain run (holds checkpoint_final.pth)")
    p.add_argument("--cases", choices=("val", "train"), default="val",
                   help="the fold's validation cases (default; never seen by pre-training) or its training cases")
    p.add_argument("--random", type=int, default=10, help="number of random encoders to compare with (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the triplets (default 0)")
    return p


def probe_entry(argv: Sequence[str] | None = None) -> None:
    """Console entry point of ``polycl_probe``."""
    args = _parser().parse_args(argv)
    try:
        result = run_probe(args.folder, args.cases, args.random, args.seed)
    except PolyCLUserError as e:
        sys.exit(f"{PROG}: error: {e}")
    print(describe_probe(result))
    print(f"Probe result: {join(args.folder, PROBE_FILE)}; picture of the embeddings (pre-trained beside random): "
          f"{result['embeddings_figure']}")


def run_probe(folder: str, cases: str = "val", n_random: int = 10, seed: int = 0) -> dict:
    """Probe the run in ``folder`` (see :func:`~nnunet_polycl.pretraining.probe.probe_against_random`); writes and
    returns the result.

    Raises:
        PolyCLUserError: not a pre-training run, a SimCLR run (no triplets), or cases that cannot serve the strategy.
    """
    from nnunet_polycl.pretraining.embedding_map import write_embedding_map
    from nnunet_polycl.pretraining.probe import load_pretrained_model, probe_against_random
    from nnunet_polycl.splits import training_cases

    if n_random < 1:
        raise PolyCLUserError(f"--random {n_random}: compare with at least 1 random encoder.")
    model, ctx, settings = load_pretrained_model(folder)
    if settings.strategy not in ("S", "O", "M"):
        raise PolyCLUserError(f"{folder} is a {settings.strategy} run: the probe scores PolyCL triplets (S, O, M).")
    train, val = training_cases(ctx, settings.fold, write_missing=False)
    result, embeddings = probe_against_random(model, ctx, val if cases == "val" else train, settings.strategy,
                                              settings.label_values, n_random, seed)
    result["cases_kind"] = f"{'validation' if cases == 'val' else 'training'} cases of fold {settings.fold}"
    panels = [(f"pre-trained encoder (PolyCL-{settings.strategy})", embeddings.pretrained.numpy(),
               result["pretrained"]["accuracy"]),
              ("random encoder (same architecture, seed 0)", embeddings.random.numpy(), result["random"][0])]
    result["embeddings_figure"] = write_embedding_map(
        folder, embeddings.index, panels, f"{settings.dataset_name}, {result['cases_kind']}",
        seed)
    atomic_write_json(result, join(folder, PROBE_FILE))
    return result


def describe_probe(result: dict) -> str:
    """Two lines: the pre-trained and random accuracies, and what they mean."""
    acc, best, n = result["pretrained"]["accuracy"], result["best_random"], len(result["random"])
    head = (f"{result['strategy']} triplet accuracy on the {result['cases_kind']} ({result['pretrained']['slices']} "
            f"slices): pre-trained {acc:.3f}; {n} random encoders {min(result['random']):.3f}-{best:.3f}")
    meaning = ("better than every random encoder tried: the encoder learnt something that transfers to these scans"
               if result["margin"] > 0 else "NOT better than the random encoders: it learnt nothing that transfers to "
               "these scans (it may have memorised its training scans: try fewer epochs or a larger --lr)")
    return f"{head} (margin {result['margin']:+.3f}).\n{meaning}."
