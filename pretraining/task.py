"""What one strategy feeds the training loop: per-batch dataset, epoch sampler and objective."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from nnunet_polycl.network import PlansContext
from nnunet_polycl.paths import PolyCLUserError
from nnunet_polycl.pretraining.objectives import SimCLRObjective, TripletObjective
from nnunet_polycl.pretraining.simclr_views import SimCLRViewBatches, nnunet_2d_training_transforms
from nnunet_polycl.pretraining.slice_data import EpochBatchSampler, PreprocessedSlices, TripletBatches
from nnunet_polycl.sampling import TripletSampler, make_sampler
from nnunet_polycl.slice_index import SliceIndex


@dataclass
class PretrainingTask:
    """Dataset items are whole batches (``[views * M, C, H, W]``); ``sampler`` yields one request per batch."""

    dataset: Dataset
    sampler: EpochBatchSampler
    objective: TripletObjective | SimCLRObjective
    triplet_sampler: TripletSampler | None = None  # S / O / M; its ``fallbacks`` count the current epoch's


def build_task(ctx: PlansContext, index: SliceIndex, strategy: str, batch_size: int, temperature: float,
               seed: int) -> PretrainingTask:
    """Set up strategy ``strategy`` on ``index``; validates it (e.g. O without organ slices) before any training.

    Raises:
        PolyCLUserError: the strategy cannot run on this index (the sampler's message says why and what to do).
    """
    if strategy == "simclr":
        if batch_size < 2:
            raise PolyCLUserError("SimCLR contrasts each slice with the other slices of its batch: use --batch-size "
                                  ">= 2.")
        if len(index) < 2:
            raise PolyCLUserError(f"SimCLR needs at least 2 slices; the index has {len(index)}. Use a larger "
                                  f"--slice-fraction or more cases.")
        transforms, initial_size = nnunet_2d_training_transforms(ctx)
        slices = PreprocessedSlices(ctx.data_folder, index.case_ids, initial_size, index.case_folders)

        def permutation(epoch: int) -> np.ndarray:
            return np.random.default_rng([seed, epoch]).permutation(len(index))

        sampler = EpochBatchSampler(permutation, len(index), batch_size, min_batch_size=2)
        return PretrainingTask(SimCLRViewBatches(slices, index, transforms, seed), sampler,
                               SimCLRObjective(temperature))
    triplet_sampler = make_sampler(strategy, index, seed)
    sampler = EpochBatchSampler(triplet_sampler.triplets, len(index), batch_size)
    slices = PreprocessedSlices(ctx.data_folder, index.case_ids, ctx.patch_size, index.case_folders)
    return PretrainingTask(TripletBatches(slices, index), sampler, TripletObjective(temperature),
                           triplet_sampler)
