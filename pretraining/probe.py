"""Learning signal of a pre-trained encoder: triplet accuracy on slices the pre-training never saw.

Triplets are drawn by the PolyCL samplers (S, O or M) from an index of ``case_ids`` (typically the fold's validation
cases); every slice is embedded once by the encoder + head in evaluation mode, and a triplet counts as correct when
cos(z, z+) > cos(z, z-).

What a random encoder scores is not 0.5 in general: a randomly initialised network already tells scans apart by
their intensity statistics (strategy S), so the reference is measured, not assumed: :func:`probe_against_random`
scores ``n`` randomly initialised encoders (seeds 0 .. n-1) on the same triplets, and the pre-trained encoder's
margin is its accuracy minus the best of them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from os.path import isfile, join

import numpy as np
import torch
import torch.nn.functional as F

from nnunet_polycl.checkpoint import load_checkpoint
from nnunet_polycl.heads import ContrastiveEncoder
from nnunet_polycl.network import PlansContext, build_plans_network, encoder_of, load_plans_context
from nnunet_polycl.paths import PolyCLUserError
from nnunet_polycl.pretraining.loop import FINAL_CHECKPOINT, LATEST_CHECKPOINT
from nnunet_polycl.pretraining.settings import PretrainSettings
from nnunet_polycl.pretraining.slice_data import PreprocessedSlices
from nnunet_polycl.sampling import make_sampler
from nnunet_polycl.slice_index import SliceIndex, build_slice_index


def load_pretrained_model(folder: str) -> tuple[ContrastiveEncoder, PlansContext, PretrainSettings]:
    """Encoder + head of the run in ``folder`` (final checkpoint, else latest), on CPU in evaluation mode."""
    path = next((join(folder, n) for n in (FINAL_CHECKPOINT, LATEST_CHECKPOINT) if isfile(join(folder, n))), None)
    if path is None:
        raise PolyCLUserError(f"No {FINAL_CHECKPOINT} or {LATEST_CHECKPOINT} in {folder}: not a pre-training run.")
    ckpt = load_checkpoint(path)
    settings = PretrainSettings.from_dict(ckpt["settings"])
    ctx = load_plans_context(settings.dataset_name, settings.plans_identifier, settings.configuration)
    model = random_model(ctx, settings.embed_dim)
    model.load_state_dict(ckpt["model"])
    return model.eval(), ctx, settings


def random_model(ctx: PlansContext, embed_dim: int = 256, seed: int = 0) -> ContrastiveEncoder:
    """The untrained encoder + head (nnU-Net's initialisation), the reference a pre-trained model must beat."""
    torch.manual_seed(seed)
    return ContrastiveEncoder(encoder_of(build_plans_network(ctx)), embed_dim).eval()


@torch.no_grad()
def embed_index(model: ContrastiveEncoder, ctx: PlansContext, index: SliceIndex, batch_size: int = 32,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """Unit-length embeddings ``[N, D]`` (on CPU) of every slice of ``index``, read like in pre-training."""
    slices = PreprocessedSlices(ctx.data_folder, index.case_ids, ctx.patch_size)
    model = model.to(device).eval()
    out = []
    for start in range(0, len(index), batch_size):
        rows = range(start, min(start + batch_size, len(index)))
        batch = np.stack([slices.image(int(index.scan[r]), int(index.z[r])) for r in rows])
        out.append(F.normalize(model(torch.from_numpy(batch).to(device)).float(), dim=1).cpu())
    return torch.cat(out)


def triplet_accuracy(model: ContrastiveEncoder, ctx: PlansContext, case_ids: Sequence[str], strategy: str,
                     labels: Sequence[int] | None = None, seed: int = 0, rounds: int = 5,
                     device: str | torch.device = "cpu") -> dict[str, float]:
    """Share of ``strategy`` triplets over ``case_ids`` with cos(z, z+) > cos(z, z-), and the mean cosines.

    ``rounds`` epochs of triplets are drawn (each slice is an anchor once per round); ``labels`` as in
    ``build_slice_index`` (None: any foreground).

    Raises:
        PolyCLUserError: the cases cannot serve the strategy (e.g. O on cases without organ slices).
    """
    index = build_slice_index(ctx, case_ids, labels)
    return triplet_accuracy_of_embeddings(embed_index(model, ctx, index, device=device), index, strategy, seed,
                                          rounds)


def triplet_accuracy_of_embeddings(z: torch.Tensor, index: SliceIndex, strategy: str, seed: int = 0,
                                   rounds: int = 5) -> dict[str, float]:
    """:func:`triplet_accuracy` for unit-length embeddings ``z`` (``[N, D]``, rows of ``index``) computed before."""
    if z.shape[0] != len(index):
        raise ValueError(f"z has {z.shape[0]} rows but the index has {len(index)} slices")
    sampler = make_sampler(strategy, index, seed)
    triplets = torch.from_numpy(np.concatenate([sampler.triplets(r) for r in range(rounds)]))
    anchor, positive, negative = (z[triplets[:, i]] for i in range(3))
    cos_pos, cos_neg = (anchor * positive).sum(1), (anchor * negative).sum(1)
    return {"accuracy": (cos_pos > cos_neg).float().mean().item(), "cos_pos": cos_pos.mean().item(),
            "cos_neg": cos_neg.mean().item(), "triplets": len(triplets), "slices": len(index)}


@dataclass(frozen=True)
class ProbeEmbeddings:
    """The slices a probe scored and their unit-length embeddings ``[N, D]``: the pre-trained encoder's and the
    first random encoder's (seed 0), for the embedding map."""

    index: SliceIndex
    pretrained: torch.Tensor
    random: torch.Tensor


def probe_against_random(model: ContrastiveEncoder, ctx: PlansContext, case_ids: Sequence[str], strategy: str,
                         labels: Sequence[int] | None = None, n_random: int = 10, seed: int = 0,
                         device: str | torch.device = "cpu") -> tuple[dict, ProbeEmbeddings]:
    """Triplet accuracy of ``model`` and of ``n_random`` (>= 1) random encoders (same architecture, head, triplets).

    Returns ``{strategy, cases, pretrained: {...}, random: [accuracies], best_random, margin}``, where ``margin`` =
    pre-trained accuracy - the best random accuracy (> 0: better than every random encoder tried), and the
    embeddings of the pre-trained and the first random encoder.
    """
    if n_random < 1:
        raise ValueError(f"n_random must be at least 1, got {n_random}")
    index = build_slice_index(ctx, case_ids, labels)
    z = embed_index(model, ctx, index, device=device)
    trained = triplet_accuracy_of_embeddings(z, index, strategy, seed)
    embed_dim = model.head.linear.out_features
    random, first_random = [], None
    for s in range(n_random):
        z_random = embed_index(random_model(ctx, embed_dim, s), ctx, index, device=device)
        random.append(triplet_accuracy_of_embeddings(z_random, index, strategy, seed)["accuracy"])
        first_random = z_random if first_random is None else first_random
    best = max(random)
    result = {"strategy": strategy, "cases": sorted(case_ids), "pretrained": trained, "random": random,
              "best_random": best, "margin": trained["accuracy"] - best}
    return result, ProbeEmbeddings(index, z, first_random)
