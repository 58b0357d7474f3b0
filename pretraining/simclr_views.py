"""SimCLR baseline input: two augmented views of every slice, made by nnU-Net's own 2D training transforms.

The transforms are exactly what ``nnUNetTrainer.get_training_transforms`` builds for the dataset's ``2d``
configuration (batchgeneratorsv2: rotation / scaling, Gaussian noise and blur, brightness, contrast, simulated low
resolution, gamma, mirroring), with nnU-Net's own rotation range and mirror axes
(``configure_rotation_dummyDA_mirroring_and_inital_patch_size``) and without deep-supervision targets. As in nnU-Net,
each slice is read at the larger initial patch size, so that rotated views have no empty corners, and the spatial
transform crops the view to the patch size. Both views start from the same already-normalised slice (nnU-Net's
preprocessing), so they are normalised identically; they differ only by their random augmentation.

Augmentation randomness is seeded per slice from (seed, epoch, slice row), independently of the number of DataLoader
workers and of how a batch is split across the processes of a multi-process run, and never disturbs the global RNG
of the process that builds the batch.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import torch
from torch.utils.data import Dataset

from nnunet_polycl.network import PlansContext
from nnunet_polycl.pretraining.slice_data import BatchRequest, PreprocessedSlices
from nnunet_polycl.slice_index import SliceIndex


def nnunet_2d_training_transforms(ctx: PlansContext):
    """``(transforms, initial_patch_size)`` of nnU-Net's training augmentation for ``ctx``'s 2D configuration."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    # The nnU-Net method only reads configuration_manager and writes to the log; a namespace stands in for the trainer.
    host = SimpleNamespace(configuration_manager=ctx.configuration_manager, print_to_log_file=lambda *a, **k: None)
    rotation, dummy_2d, initial_patch_size, mirror_axes = \
        nnUNetTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size(host)
    transforms = nnUNetTrainer.get_training_transforms(
        ctx.patch_size, rotation, None, mirror_axes, dummy_2d,
        use_mask_for_norm=ctx.configuration_manager.use_mask_for_norm)
    return transforms, tuple(int(s) for s in initial_patch_size)


@contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Seed Python / NumPy / torch (CPU) for the block, then restore the previous global states."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


class SimCLRViewBatches(Dataset):
    """Map-style dataset indexed by :class:`BatchRequest` with ``rows`` = ``int64[M]`` slice rows.

    Returns float32 ``[2M, C, H, W]``: the first views of the M slices, then their second views.
    """

    def __init__(self, slices: PreprocessedSlices, index: SliceIndex, transforms, seed: int):
        self.slices = slices
        self.scan = np.asarray(index.scan)
        self.z = np.asarray(index.z)
        self.transforms = transforms
        self.seed = seed

    def _view(self, image: np.ndarray, seg: np.ndarray) -> torch.Tensor:
        out = self.transforms(image=torch.from_numpy(image.copy()), segmentation=torch.from_numpy(seg.copy()))
        return out["image"].float()

    def __getitem__(self, request: BatchRequest) -> torch.Tensor:
        rows = np.asarray(request.rows)
        if rows.ndim != 1:
            raise ValueError(f"SimCLRViewBatches expects rows of shape [M], got {rows.shape}")
        first, second = [], []
        for r in rows:
            scan, z = int(self.scan[r]), int(self.z[r])
            image, seg = self.slices.image(scan, z), self.slices.segmentation(scan, z)
            seed = int(np.random.SeedSequence([self.seed, request.epoch, int(r)]).generate_state(1)[0])
            with isolated_rng(seed):
                first.append(self._view(image, seg))
                second.append(self._view(image, seg))
        return torch.stack(first + second)
