"""Pieces of the pre-training stage on the small demo copy: checkpoint I/O, slice reading, batches, views, metrics."""
from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnunet_polycl.checkpoint import (
    UNSAFE_LOAD_VARIABLE,
    atomic_torch_save,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
)
from nnunet_polycl.losses import NTXentLoss
from nnunet_polycl.paths import PolyCLUserError
from tests.pretraining.conftest import SMALL_NAME


@pytest.fixture
def small_ctx(small_env, monkeypatch):
    from nnunet_polycl.network import load_plans_context

    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, small_env[key])
    return load_plans_context(SMALL_NAME)


@pytest.fixture
def small_index(small_ctx):
    from nnunet_polycl.slice_index import build_slice_index
    from nnunet_polycl.splits import training_cases

    return build_slice_index(small_ctx, training_cases(small_ctx, "all")[0])


def test_atomic_save_replaces_whole_files_and_never_leaves_partial_ones(tmp_path):
    path = tmp_path / "ckpt.pth"
    atomic_torch_save({"epoch": 1}, str(path))
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        atomic_torch_save({"epoch": 2, "bad": lambda: None}, str(path))  # fails half-way through writing
    assert load_checkpoint(str(path)) == {"epoch": 1}
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pth"]


def test_equal_objects_are_saved_as_equal_bytes(tmp_path):
    """The sha256 of two bit-identical pre-trainings' weights agree (torch names its archive after a path it is given:
    the random temporary name must not end up in the file)."""
    from nnunet_polycl.checkpoint import file_sha256

    weights = {"encoder": {"w": torch.linspace(0, 1, 100)}, "meta": {"epochs": 3}}
    atomic_torch_save(weights, str(tmp_path / "a.pth"))
    atomic_torch_save(weights, str(tmp_path / "b.pth"))
    assert file_sha256(str(tmp_path / "a.pth")) == file_sha256(str(tmp_path / "b.pth"))


@pytest.mark.parametrize("content", [b"", b"garbage", None])
def test_unreadable_checkpoint_names_the_file(tmp_path, content):
    path = tmp_path / "checkpoint_latest.pth"
    if content is None:  # a real checkpoint cut short
        atomic_torch_save({"w": torch.arange(10000)}, str(path))
        content = path.read_bytes()[:300]
    path.write_bytes(content)
    with pytest.raises(PolyCLUserError, match="cannot be read") as error:
        load_checkpoint(str(path))
    assert str(path) in str(error.value)


def test_rng_state_round_trip_through_a_data_only_file(tmp_path):
    atomic_torch_save({"rng": capture_rng_state()}, str(tmp_path / "rng.pth"))
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def _step(state) -> None:
    state.optimizer.zero_grad()
    state.model(torch.randn(4, 3)).square().sum().backward()
    state.optimizer.step()
    state.scheduler.step()


def _trained_state(seed: int):
    from nnunet_polycl.pretraining.loop import new_state

    torch.manual_seed(seed)
    state = new_state(torch.nn.Linear(3, 2), 1e-2, iterations_per_epoch=2, device=torch.device("cpu"))
    for _ in range(3 + seed):
        _step(state)
    state.epoch, state.history["loss"] = 1, [np.float64(0.5)]
    return state


def test_checkpoints_are_data_and_continue_exactly(tmp_path):
    from nnunet_polycl.pretraining.loop import checkpoint_dict, restore_state
    from nnunet_polycl.pretraining.settings import PretrainSettings

    settings = PretrainSettings("D", "nnUNetPlans", "2d", 0, "S", None, (np.int64(1),), 2, 4, 1e-2, 0.25, 2, 1.0, 0,
                                0, "cpu")
    path = tmp_path / "checkpoint_latest.pth"
    state = _trained_state(0)
    atomic_torch_save(checkpoint_dict(state, settings, {"case_ids": [np.str_("a")]}), str(path))
    torch.load(path, weights_only=True)  # tensors and plain values only
    resumed = _trained_state(1)
    checkpoint = load_checkpoint(str(path))
    restore_state(resumed, checkpoint)
    for s in (state, resumed):  # one more step each: the same optimiser state, schedule and random numbers
        restore_rng_state(checkpoint["rng"])
        _step(s)
    assert all(torch.equal(a, b) for a, b in zip(state.model.state_dict().values(),
                                                 resumed.model.state_dict().values(), strict=True))
    assert resumed.scheduler.state_dict() == state.scheduler.state_dict()


def test_an_older_checkpoint_needs_the_opt_in(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_latest.pth"
    torch.save({"epoch": 1, "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                                    "torch": torch.get_rng_state()}}, path)  # what older versions wrote
    with pytest.raises(PolyCLUserError, match=f"holds Python objects .*numpy.*{UNSAFE_LOAD_VARIABLE}=1") as error:
        load_checkpoint(str(path))
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    monkeypatch.setenv(UNSAFE_LOAD_VARIABLE, "1")
    first = (random.random(), np.random.rand())
    restore_rng_state(load_checkpoint(str(path))["rng"])  # the tuple form of older versions still restores
    assert (random.random(), np.random.rand()) == first


def test_slices_are_center_cropped_or_padded_with_nnunets_values(small_ctx, small_index):
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    from nnunet_polycl.pretraining.slice_data import PreprocessedSlices

    case = small_index.case_ids[0]
    data, seg, _, _ = infer_dataset_class(small_ctx.data_folder)(small_ctx.data_folder, [case]).load_case(case)
    data, seg = np.asarray(data[:]), np.asarray(seg[:])
    _, _, h, w = data.shape
    size = (h + 6, w - 5)  # pad 3 + 3 rows, crop 2 + 3 columns
    slices = PreprocessedSlices(small_ctx.data_folder, small_index.case_ids, size)
    image, labels = slices.image(0, 4), slices.segmentation(0, 4)
    assert image.shape == (data.shape[0], *size) and image.dtype == np.float32
    np.testing.assert_array_equal(image[:, 3:-3], data[:, 4, :, 2:-3])
    assert (image[:, :3] == 0).all() and (image[:, -3:] == 0).all()
    np.testing.assert_array_equal(labels[:, 3:-3], seg[:, 4, :, 2:-3])
    assert (labels[:, :3] == -1).all() and (labels[:, -3:] == -1).all()


def test_triplet_batches_stack_anchor_positive_negative_and_read_each_slice_once(small_ctx, small_index):
    from nnunet_polycl.pretraining.slice_data import BatchRequest, PreprocessedSlices, TripletBatches

    class CountingSlices(PreprocessedSlices):
        reads: list = []

        def image(self, scan, z):
            self.reads.append((scan, z))
            return super().image(scan, z)

    slices = CountingSlices(small_ctx.data_folder, small_index.case_ids, small_ctx.patch_size)
    rows = np.array([[0, 1, 30], [1, 0, 31], [2, 0, 30]])
    batch = TripletBatches(slices, small_index)[BatchRequest(0, 0, rows)]
    assert batch.shape == (9, 1, *small_ctx.patch_size)
    assert sorted(CountingSlices.reads) == sorted({(int(small_index.scan[r]), int(small_index.z[r]))
                                                   for r in rows.ravel()})
    for position, row in enumerate(rows.T.ravel()):
        expected = slices.image(int(small_index.scan[row]), int(small_index.z[row]))
        assert torch.equal(batch[position], torch.from_numpy(expected))


def test_loader_with_workers_serves_every_anchor_once_per_epoch(small_ctx, small_index):
    from nnunet_polycl.pretraining.slice_data import make_loader
    from nnunet_polycl.pretraining.task import build_task

    task = build_task(small_ctx, small_index, "O", batch_size=8, temperature=0.125, seed=0)
    task.dataset.slices.image(0, 0)  # handles opened in this process must not travel to the workers
    loader = make_loader(task.dataset, task.sampler, num_workers=2, device=torch.device("cpu"))
    for epoch in (0, 1):
        task.sampler.set_epoch(epoch)
        batches = list(loader)
        assert sum(b.shape[0] // 3 for b in batches) == len(small_index)
        assert torch.equal(batches[0], task.dataset[next(iter(task.sampler))])  # same as reading in-process
    triplets = task.triplet_sampler.triplets(0)
    assert sorted(triplets[:, 0]) == list(range(len(small_index)))
    assert not np.array_equal(triplets, task.triplet_sampler.triplets(1))


@pytest.mark.parametrize("num_items, batch_size, min_batch_size, sizes", [
    (10, 4, 1, [4, 4, 2]), (9, 4, 1, [4, 4, 1]), (9, 4, 2, [4, 5]), (3, 4, 2, [3]), (8, 4, 2, [4, 4])])
def test_epoch_batches_use_every_item_once(num_items, batch_size, min_batch_size, sizes):
    from nnunet_polycl.pretraining.slice_data import EpochBatchSampler

    sampler = EpochBatchSampler(lambda epoch: np.arange(num_items) + 100 * epoch, num_items, batch_size,
                                min_batch_size)
    sampler.set_epoch(2)
    requests = list(sampler)
    assert [len(r.rows) for r in requests] == sizes and len(sampler) == len(sizes)
    assert np.concatenate([r.rows for r in requests]).tolist() == list(range(200, 200 + num_items))
    assert [(r.epoch, r.number) for r in requests] == [(2, i) for i in range(len(sizes))]


def test_simclr_views_are_seeded_per_slice_and_leave_global_rng_alone(small_ctx, small_index):
    from nnunet_polycl.pretraining.slice_data import BatchRequest
    from nnunet_polycl.pretraining.task import build_task

    task = build_task(small_ctx, small_index, "simclr", batch_size=4, temperature=0.25, seed=0)
    request = BatchRequest(0, 0, np.arange(4))
    torch.manual_seed(5)
    first = task.dataset[request]
    after = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(task.dataset[request], first) and torch.equal(torch.rand(1), after)
    assert first.shape == (8, 1, *small_ctx.patch_size) and torch.isfinite(first).all()
    assert not torch.equal(first[:4], first[4:])  # two different augmentations of the same slices
    assert not torch.equal(task.dataset[BatchRequest(1, 0, np.arange(4))], first)
    # a process of a multi-process run that builds only rows 2 and 3 of the batch gets the same views of them
    shard = task.dataset[BatchRequest(0, 0, np.arange(2, 4))]
    assert torch.equal(shard, torch.cat([first[2:4], first[6:8]]))


def test_simclr_metrics_cover_every_implied_triplet():
    from nnunet_polycl.pretraining.objectives import SimCLRObjective
    from nnunet_polycl.pretraining.sharding import BatchShard

    torch.manual_seed(0)
    z = torch.randn(6, 5)
    objective = SimCLRObjective(0.5)
    share, sums = objective(z, BatchShard.of(3))
    unit = F.normalize(z, dim=1)
    pairs = []
    for i in range(6):
        partner = (i + 3) % 6
        for k in range(6):
            if k not in (i, partner):
                pairs.append((float(unit[i] @ unit[partner]), float(unit[i] @ unit[k])))
    reference = torch.tensor(pairs)
    assert objective.implied_triplets(3) == len(pairs)
    torch.testing.assert_close(sums, torch.stack([reference[:, 0].sum(), reference[:, 1].sum(),
                                                  (reference[:, 0] > reference[:, 1]).sum().float()]))
    torch.testing.assert_close(share, NTXentLoss(0.5)(z[:3], z[3:]))


def test_lower_lr_on_continue_rescales_the_schedule():
    from nnunet_polycl.pretraining.loop import change_lr, new_state

    model = torch.nn.Linear(2, 2)
    state = new_state(model, 1e-3, iterations_per_epoch=4, device=torch.device("cpu"))
    for _ in range(7):
        state.optimizer.step()
        state.scheduler.step()
    before = state.optimizer.param_groups[0]["lr"]
    change_lr(state, 1e-4)
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(before / 10)
    state.optimizer.step()
    state.scheduler.step()
    reference = new_state(torch.nn.Linear(2, 2), 1e-4, iterations_per_epoch=4, device=torch.device("cpu"))
    for _ in range(8):
        reference.optimizer.step()
        reference.scheduler.step()
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(reference.optimizer.param_groups[0]["lr"])


def test_probe_scores_an_untrained_encoder(small_ctx, small_index):
    from nnunet_polycl.pretraining.probe import random_model, triplet_accuracy

    result = triplet_accuracy(random_model(small_ctx), small_ctx, small_index.case_ids, "O", rounds=2)
    assert result["triplets"] == 2 * len(small_index) and result["slices"] == len(small_index)
    assert 0 <= result["accuracy"] <= 1 and -1 <= result["cos_neg"] <= 1
