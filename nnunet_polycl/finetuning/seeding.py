"""Seeded fine-tuning: the same seed gives the same network initialisation, batches and augmentations.

nnU-Net does not seed its trainer. A ``_seed<s>`` variant seeds Python's, NumPy's and torch's generators with ``s``
when it initialises (before the network is built, so the decoder's and the baseline's random initialisation are
seeded), and replaces nnU-Net's augmentation workers, whose batches arrive in whatever order the workers finish
(``NonDetMultiThreadedAugmenter``) and whose generators are not seeded, by batchgenerators' deterministic
``MultiThreadedAugmenter`` (batches taken from the workers in turn) with every worker's generators seeded from
``(s, worker)``. With ``nnUNet_n_proc_DA=0`` the batches are made in the main process from the seeded generators.

On the CPU two runs with the same seed are bit-identical. On a GPU they are seeded but not bitwise reproducible
(nnU-Net enables ``cudnn.benchmark``, whose kernels are not deterministic).
"""
from __future__ import annotations

from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter

from nnunet_polycl.checkpoint import seed_everything

WORKER_SEED_STRIDE = 1000


def worker_seed(seed: int, worker: int, stream: int = 0) -> int:
    """Seed of augmentation worker ``worker`` (``stream`` 0: training, 1: validation batches)."""
    return (seed * WORKER_SEED_STRIDE + 2 * worker + stream) % 2**32


class SeededWorkerLoader:
    """A batchgenerators data loader whose worker seeds Python, NumPy and torch when it learns its worker number.

    ``MultiThreadedAugmenter``'s worker calls ``set_thread_id`` once before it draws its first batch; nnU-Net's
    transforms draw from NumPy and torch, its loader from NumPy.
    """

    def __init__(self, loader, seed: int, stream: int):
        self.loader = loader
        self.seed = seed
        self.stream = stream

    def set_thread_id(self, thread_id: int) -> None:
        seed_everything(worker_seed(self.seed, thread_id, self.stream))
        self.loader.set_thread_id(thread_id)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.loader)

    def __getattr__(self, name: str):
        return getattr(self.loader, name)


def seeded_augmenter(loader, seed: int, stream: int, num_processes: int, num_cached: int,
                     pin_memory: bool) -> MultiThreadedAugmenter:
    """A deterministic multi-process augmenter over ``loader`` (nnU-Net's data loader with its transforms)."""
    seeds = [worker_seed(seed, i, stream) for i in range(num_processes)]
    return MultiThreadedAugmenter(SeededWorkerLoader(loader, seed, stream), None, num_processes, num_cached,
                                  seeds=seeds, pin_memory=pin_memory)
