"""Slices of nnU-Net-preprocessed cases for pre-training: one DataLoader item is one whole batch.

- Slices are read from the preprocessed arrays through nnU-Net's dataset class (``infer_dataset_class``: memory-mapped
  blosc2 ``.b2nd`` or numpy). In the 2D preprocessed data a blosc2 chunk is one slice, so reading ``data[:, z]``
  decompresses one slice only. Cases are opened lazily inside the process that reads them (each DataLoader worker
  opens its own handles; open handles are never pickled into workers nor shared across a fork). The cases may live
  in several preprocessed folders (the dataset's own and the caches of unlabelled scans): one reader per folder.
- Each slice is center-cropped or padded to the plans' 2D patch size (``slice_index.centered_bbox``, the crop on
  which the slice index computes the organ status). Images are padded with 0 and segmentations
  with -1, the values nnU-Net's ``nnUNetDataLoader`` pads with (after nnU-Net's normalisation 0 is the mean
  intensity for CT / z-score; -1 marks "outside the nonzero crop mask" in the segmentation).
- The sampler hands every worker a :class:`BatchRequest` holding all rows of one batch; the worker decompresses each
  distinct slice of the batch once, even when it serves as anchor of one triplet and positive of another, and returns
  anchors, positives and negatives stacked as one ``[3M, C, H, W]`` tensor, so the model sees them in one pass.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from nnunet_polycl.environment import available_cpus
from nnunet_polycl.slice_index import SliceIndex, centered_bbox

IMAGE_PAD_VALUE = 0
SEG_PAD_VALUE = -1


class BatchRequest(NamedTuple):
    """What a worker needs to build one batch: ``rows`` are slice rows of the index (``[M, 3]`` or ``[M]``)."""

    epoch: int
    number: int
    rows: np.ndarray


class PreprocessedSlices:
    """Reads single 2D slices (all channels) of preprocessed cases, center-cropped / padded to ``size``.

    ``case_folders`` (one per case, e.g. ``SliceIndex.case_folders``) names the folder of each case; None: all cases
    are in ``data_folder``.
    """

    def __init__(self, data_folder: str, case_ids: tuple[str, ...], size: tuple[int, int],
                 case_folders: tuple[str, ...] | None = None):
        self.data_folder = data_folder
        self.case_ids = tuple(case_ids)
        self.case_folders = tuple(case_folders) if case_folders is not None else (data_folder,) * len(self.case_ids)
        if len(self.case_folders) != len(self.case_ids):
            raise ValueError(f"case_folders must name one folder per case ({len(self.case_ids)}); "
                             f"got {len(self.case_folders)}")
        self.size = tuple(int(s) for s in size)
        self._owner_pid: int | None = None
        self._cases: dict[int, tuple] = {}
        self._readers: dict[str, object] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_owner_pid=None, _cases={}, _readers={})
        return state

    def _case(self, scan: int) -> tuple:
        """(data, seg) handles of case ``scan``, opened on first use in this process."""
        if self._owner_pid != os.getpid():
            self._cases, self._readers, self._owner_pid = {}, {}, os.getpid()
        if scan not in self._cases:
            folder = self.case_folders[scan]
            if folder not in self._readers:
                from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

                ids = [c for c, f in zip(self.case_ids, self.case_folders, strict=True) if f == folder]
                self._readers[folder] = infer_dataset_class(folder)(folder, ids)
            data, seg, _, _ = self._readers[folder].load_case(self.case_ids[scan])
            self._cases[scan] = (data, seg)
        return self._cases[scan]

    def _bbox(self, array_shape: tuple[int, ...], z: int) -> list[list[int]]:
        return [[z, z + 1], *centered_bbox(tuple(array_shape[2:]), self.size)]

    def image(self, scan: int, z: int) -> np.ndarray:
        """float32 ``[C, H, W]``: slice ``z`` of case ``scan``."""
        from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd

        data = self._case(scan)[0]
        out = crop_and_pad_nd(data, self._bbox(data.shape, z), IMAGE_PAD_VALUE, cast_cropped_to=np.float32)
        return np.ascontiguousarray(out[:, 0], dtype=np.float32)

    def segmentation(self, scan: int, z: int) -> np.ndarray:
        """int16 ``[1, H, W]``: the segmentation of slice ``z`` of case ``scan`` (-1 outside the crop mask)."""
        from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd

        seg = self._case(scan)[1]
        out = crop_and_pad_nd(seg, self._bbox(seg.shape, z), SEG_PAD_VALUE, cast_cropped_to=np.int16)
        return np.ascontiguousarray(out[:, 0], dtype=np.int16)


class TripletBatches(Dataset):
    """Map-style dataset indexed by :class:`BatchRequest` with ``rows`` = ``int64[M, 3]`` (anchor, pos, neg rows).

    Returns float32 ``[3M, C, H, W]``: the M anchors, then the M positives, then the M negatives.
    """

    def __init__(self, slices: PreprocessedSlices, index: SliceIndex):
        self.slices = slices
        self.scan = np.asarray(index.scan)
        self.z = np.asarray(index.z)

    def __getitem__(self, request: BatchRequest) -> torch.Tensor:
        rows = np.asarray(request.rows)
        if rows.ndim != 2 or rows.shape[1] != 3:
            raise ValueError(f"TripletBatches expects rows of shape [M, 3], got {rows.shape}")
        order = rows.T.reshape(-1)  # anchors, then positives, then negatives
        unique, inverse = np.unique(order, return_inverse=True)
        stack = np.stack([self.slices.image(int(self.scan[u]), int(self.z[u])) for u in unique])
        return torch.from_numpy(stack[inverse.reshape(-1)])


class EpochBatchSampler(Sampler):
    """Yields one :class:`BatchRequest` per batch of the current epoch's item array.

    ``make_epoch(epoch)`` returns the epoch's items (a triplet array ``[N, 3]`` or a slice permutation ``[N]``); it
    runs in the main process at the start of each epoch. Call :meth:`set_epoch` before iterating the DataLoader.
    Every item is used exactly once per epoch: the last batch may be smaller, and a last batch smaller than
    ``min_batch_size`` is merged into the one before (SimCLR needs at least 2 slices per batch).
    """

    def __init__(self, make_epoch: Callable[[int], np.ndarray], num_items: int, batch_size: int,
                 min_batch_size: int = 1):
        if not 1 <= min_batch_size <= batch_size:
            raise ValueError(f"need 1 <= min_batch_size <= batch_size, got {min_batch_size} and {batch_size}")
        self.make_epoch = make_epoch
        self.num_items = num_items
        self.batch_size = batch_size
        self.epoch = 0
        starts = list(range(0, num_items, batch_size))
        if len(starts) > 1 and num_items - starts[-1] < min_batch_size:
            starts.pop()
        self.bounds = list(zip(starts, starts[1:] + [num_items], strict=True))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.bounds)

    def __iter__(self):
        items = self.make_epoch(self.epoch)
        if len(items) != self.num_items:
            raise RuntimeError(f"epoch {self.epoch} has {len(items)} items, expected {self.num_items}")
        for number, (start, stop) in enumerate(self.bounds):
            yield BatchRequest(self.epoch, number, items[start:stop])


def default_num_workers(processes: int = 1) -> int:
    """Workers per training process: min(8, CPUs available / ``processes``), at least 1."""
    cpus = available_cpus()
    return max(1, min(8, cpus // processes))


def make_loader(dataset: Dataset, sampler: Sampler, num_workers: int, device: torch.device) -> DataLoader:
    """DataLoader over whole-batch items: persistent workers, 4 batches prefetched per worker, pinned memory on CUDA."""
    extra = {"persistent_workers": True, "prefetch_factor": 4} if num_workers > 0 else {}
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=num_workers,
                      pin_memory=device.type == "cuda", **extra)
