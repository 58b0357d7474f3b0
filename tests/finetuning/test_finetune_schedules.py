"""Fine-tuning schedules and adaptations: learning-rate curves, frozen encoders, seeded runs, the paper protocol.

Trainers are built as ``nnUNetv2_train`` builds them and driven through nnU-Net's own epoch hooks and ``train_step``.
The ``_Baseline`` variants run the same stage machinery as the pre-trained ones without needing a weights file.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from nnunet_polycl.finetuning.adaptation import ENCODER_LR_FACTOR, PRETRAINED_LR_FACTOR, stage_plan, warmup_length
from nnunet_polycl.network import encoder_of, unwrap
from tests.finetuning.finetune_helpers import decoder_tensors, encoder_tensors, network_state, same_tensors


def lr_curve(trainer, epochs) -> list[float]:
    """The learning rate nnU-Net's epoch hook sets at the start of each of ``epochs``."""
    rates = []
    for epoch in epochs:
        trainer.current_epoch = epoch
        trainer.on_train_epoch_start()
        rates.append(trainer.optimizer.param_groups[0]["lr"])
    return rates


def optimised(trainer) -> set[int]:
    return {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}


def encoder_ids(trainer) -> set[int]:
    return {id(p) for p in encoder_of(trainer.network).parameters()}


def test_warmup_rises_linearly_to_a_tenth_then_decays_by_poly(make_trainer):
    trainer = make_trainer("nnUNetTrainerPolyCL_Baseline_paper_warmup")  # 100 epochs, Adam 1e-3, restarts
    trainer.initialize()
    w, peak = warmup_length(100), 1e-3 * PRETRAINED_LR_FACTOR
    assert (w, peak) == (5, pytest.approx(1e-4))
    rates = lr_curve(trainer, range(100))
    assert rates[:w] == pytest.approx([peak * (e + 1) / w for e in range(w)])  # the first epochs
    assert rates[w] == pytest.approx(peak)  # the transition: the cosine cycle starts at the peak
    assert rates[w + 9] < rates[w + 5] < rates[w] and rates[w + 10] == pytest.approx(peak)  # a warm restart
    assert optimised(trainer) == {id(p) for p in trainer.network.parameters()}


def test_default_schedule_warmup_then_nnunets_poly_to_zero(make_trainer):
    trainer = make_trainer("nnUNetTrainerPolyCL_Baseline_warmup")  # nnU-Net's 1000 epochs, SGD 1e-2
    trainer.initialize()
    peak = 1e-3
    rates = lr_curve(trainer, [0, 49, 50, 51, 999])
    assert rates[:2] == pytest.approx([peak / 50, peak])
    assert rates[2] == pytest.approx(peak)
    assert rates[3] == pytest.approx(peak * (1 - 1 / 950) ** 0.9)
    assert rates[4] == pytest.approx(peak * (1 - 949 / 950) ** 0.9) and rates[4] < 1e-5  # the end


def test_direct_is_nnuNets_own_schedule(make_trainer):
    polycl, stock = make_trainer("nnUNetTrainerPolyCL_Baseline_direct"), make_trainer("nnUNetTrainer")
    polycl.initialize()
    stock.initialize()
    epochs = [0, 1, 500, 999]
    assert lr_curve(polycl, epochs) == pytest.approx(lr_curve(stock, epochs))
    assert type(polycl.optimizer) is type(stock.optimizer)


def test_decoder_first_stages(make_trainer):
    trainer = make_trainer("nnUNetTrainerPolyCL_Baseline_paper_decoderfirst")
    trainer.initialize()
    w, peak = 5, 1e-4
    rates = lr_curve(trainer, range(w))
    assert rates == pytest.approx([peak * (e + 1) / w for e in range(w)])
    assert not optimised(trainer) & encoder_ids(trainer)  # encoder frozen while the decoder warms up
    assert lr_curve(trainer, [w, 2 * w - 1, 2 * w]) == pytest.approx([peak / w, peak, peak])
    assert encoder_ids(trainer) <= optimised(trainer)
    assert [s.name for s in stage_plan("decoderfirst", 100)] == ["warmup_decoder", "warmup_all", "train"]


def test_frozen_encoder_for_the_whole_run_at_the_schedules_rate(make_trainer):
    trainer = make_trainer("nnUNetTrainerPolyCL_Baseline_paper_frozen")
    trainer.initialize()
    assert lr_curve(trainer, [0, 99])[0] == pytest.approx(1e-3)
    assert not optimised(trainer) & encoder_ids(trainer)



def group_rates(trainer, epochs) -> list[list[float]]:
    """Every parameter group's rate after nnU-Net's epoch hook at each of ``epochs``."""
    rates = []
    for epoch in epochs:
        trainer.current_epoch = epoch
        trainer.on_train_epoch_start()
        rates.append([group["lr"] for group in trainer.optimizer.param_groups])
    return rates


@pytest.mark.parametrize("schedule", ["", "_paper"])  # nnU-Net's poly (SGD) and the paper's warm restarts (Adam)
def test_layerwise_encoder_follows_the_schedules_curve_at_a_tenth_of_the_decoders_rate(make_trainer, schedule):
    layerwise = make_trainer(f"nnUNetTrainerPolyCL_Baseline{schedule}_layerwise")
    direct = make_trainer(f"nnUNetTrainerPolyCL_Baseline{schedule}_direct")
    layerwise.initialize()
    direct.initialize()
    epochs = [0, 1, 9, 10, 15, 50, 99]
    reference = lr_curve(direct, epochs)
    rates = group_rates(layerwise, epochs)
    assert [decoder for decoder, _ in rates] == pytest.approx(reference)  # group 0: what nnU-Net logs and plots
    assert [encoder for _, encoder in rates] == pytest.approx([ENCODER_LR_FACTOR * r for r in reference])
    encoder_group = {id(p) for p in layerwise.optimizer.param_groups[1]["params"]}
    assert encoder_group == encoder_ids(layerwise)
    assert optimised(layerwise) == {id(p) for p in layerwise.network.parameters()}
    assert "(encoder at 0.1 x that rate)" in layerwise.polycl_schedule_description()


def test_layerwise_rates_survive_a_checkpoint(make_trainer, tmp_path):
    trainer = make_trainer("nnUNetTrainerPolyCL_Baseline_smoke_layerwise")
    trainer.on_train_start()
    lr_curve(trainer, [0])
    train_steps(trainer, 1)
    trainer.current_epoch = 1
    trainer.save_checkpoint(str(tmp_path / "checkpoint.pth"))
    resumed = make_trainer("nnUNetTrainerPolyCL_Baseline_smoke_layerwise")
    resumed.load_checkpoint(str(tmp_path / "checkpoint.pth"))
    decoder, encoder = group_rates(resumed, [1])[0]
    assert [decoder, encoder] == pytest.approx(group_rates(trainer, [1])[0])
    assert encoder == pytest.approx(ENCODER_LR_FACTOR * decoder) and decoder > 0


def test_warmupfull_ramps_each_iteration_to_the_schedules_full_rate(make_trainer):
    trainer = make_trainer("nnUNetTrainerPolyCL_Baseline_paper_warmupfull_k1_seed0")  # Adam 1e-3, 100 one-pass epochs
    direct = make_trainer("nnUNetTrainerPolyCL_Baseline_paper_direct_k1_seed0")
    trainer.on_train_start()
    direct.initialize()
    per_epoch = trainer.num_iterations_per_epoch
    ramp = trainer.polycl_ramp_iterations()
    assert ramp == round(0.05 * 100 * per_epoch) and ramp > per_epoch  # 5% of the run's iterations, over epochs
    seen = []
    for epoch in (0, 1):
        scheduled = lr_curve(trainer, [epoch])[0]  # what nnU-Net logs: the scheduled rate, as direct's
        assert scheduled == pytest.approx(lr_curve(direct, [epoch])[0])
        for _ in range(per_epoch):
            train_steps(trainer, 1)
            seen.append(trainer.optimizer.param_groups[0]["lr"] / scheduled)
    assert seen == pytest.approx([(i + 1) / ramp for i in range(2 * per_epoch)])  # continuous across the epoch
    trainer.current_epoch = math.ceil(ramp / per_epoch)  # the first epoch after the ramp: the schedule itself
    scheduled = lr_curve(trainer, [trainer.current_epoch])[0]
    train_steps(trainer, 1)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(scheduled)
    assert f"over the first 5% of the iterations ({ramp})" in trainer.polycl_schedule_description()

def train_steps(trainer, n: int) -> None:
    for _ in range(n):
        trainer.train_step(next(trainer.dataloader_train))


@pytest.fixture
def gloo_world_of_one(tmp_path):
    """Starts a one-process gloo group on request (after the trainer exists: nnU-Net's trainer would otherwise
    take the group for a multi-GPU run and ask for CUDA)."""
    import torch.distributed as dist

    yield lambda: dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    if dist.is_initialized():
        dist.destroy_process_group()


def assert_two_steps_train_the_decoder_only(trainer) -> dict:
    """Epoch 0, two optimiser steps: the encoder stays bit-identical, the decoder changes; returns the state after."""
    lr_curve(trainer, [0])
    before = network_state(trainer)
    train_steps(trainer, 2)
    after = network_state(trainer)
    assert same_tensors(encoder_tensors(after), encoder_tensors(before))
    assert not same_tensors(decoder_tensors(after), decoder_tensors(before))
    # nnU-Net's zero_grad clears only optimised parameters: frozen ones must not pile up gradients for the clipping
    assert all(p.grad is None or not p.grad.any() for p in encoder_of(unwrap(trainer.network)).parameters())
    return after


@pytest.mark.parametrize("wrapper", [None, "ddp"])
def test_frozen_encoder_is_bit_identical_until_the_switch_then_trains(make_trainer, gloo_world_of_one, wrapper):
    trainer = make_trainer("nnUNetTrainerPolyCL_Baseline_smoke_decoderfirst")  # 2 epochs: decoder, then all
    trainer.on_train_start()
    if wrapper == "ddp":  # as nnU-Net wraps it; the freeze must act on the unwrapped module
        gloo_world_of_one()
        trainer.network = torch.nn.parallel.DistributedDataParallel(trainer.network)
        trainer.is_ddp = True
        trainer.loss = trainer._build_loss()  # nnU-Net's DDP loss: every deep-supervision output used
    frozen = assert_two_steps_train_the_decoder_only(trainer)
    lr_curve(trainer, [1])  # the switch builds the new optimiser (through the DDP wrapper, if any)
    assert encoder_ids(trainer) <= optimised(trainer)
    train_steps(trainer, 1)
    assert not same_tensors(encoder_tensors(network_state(trainer)), encoder_tensors(frozen))


def test_freeze_acts_on_the_unwrapped_module_under_torch_compile(make_trainer):
    trainer = make_trainer("nnUNetTrainerPolyCL_Baseline_smoke_frozen")
    trainer.on_train_start()
    trainer.network = torch.compile(unwrap(trainer.network), backend="eager")
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()  # nnU-Net: compile, then optimiser
    assert_two_steps_train_the_decoder_only(trainer)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_same_seed_same_weights_other_seed_other_weights(make_trainer, monkeypatch, workers):
    monkeypatch.setenv("nnUNet_n_proc_DA", workers)

    def two_iterations(name: str) -> dict:
        trainer = make_trainer(name)
        trainer.on_train_start()
        lr_curve(trainer, [0])
        train_steps(trainer, 2)
        for augmenter in (trainer.dataloader_train, trainer.dataloader_val):
            if hasattr(augmenter, "_finish"):  # stop the augmentation workers
                augmenter._finish()
        return network_state(trainer)

    first = two_iterations("nnUNetTrainerPolyCL_Baseline_smoke_seed5")
    again = two_iterations("nnUNetTrainerPolyCL_Baseline_smoke_seed5")
    other = two_iterations("nnUNetTrainerPolyCL_Baseline_smoke_seed6")
    assert same_tensors(first, again)
    assert not same_tensors(encoder_tensors(first), encoder_tensors(other))


def test_paper_protocol_counts_its_iterations_from_the_labelled_slices(make_trainer, preprocessed_demo):
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    trainer = make_trainer("nnUNetTrainerPolyCL_Baseline_paper_k2_seed1")
    trainer.on_train_start()
    train, val = trainer.polycl_split
    folder = str(preprocessed_demo / "nnUNetPlans_2d")
    dataset = infer_dataset_class(folder)(folder, train + val)
    slices = {c: dataset.load_case(c)[0].shape[1] for c in train + val}
    assert trainer.batch_size == 10 and len(train) == 2
    assert trainer.num_iterations_per_epoch == math.ceil(sum(slices[c] for c in train) / 10)
    assert trainer.num_val_iterations_per_epoch == math.ceil(sum(slices[c] for c in val) / 10)
    assert "one pass over the 2 labelled training cases' slices" in Path(trainer.log_file).read_text()
    assert os.path.basename(trainer.output_folder) == "fold_0"


@pytest.mark.parametrize("schedule, epochs, passes, batch", [("long", 20, 10, 10), ("short", 10, 5, 10),
                                                             ("quick", 10, 5, 4)])
def test_long_short_and_quick_schedules_are_passes_over_the_labelled_slices(make_trainer, preprocessed_demo, schedule,
                                                                           epochs, passes, batch):
    """_long: 200 passes as 20 epochs of 10; _short: 50 passes as 10 epochs of 5; _quick: _short at batch 4."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    trainer = make_trainer(f"nnUNetTrainerPolyCL_Baseline_{schedule}_k1_seed0")
    trainer.on_train_start()
    train, _ = trainer.polycl_split
    folder = str(preprocessed_demo / "nnUNetPlans_2d")
    slices = infer_dataset_class(folder)(folder, train).load_case(train[0])[0].shape[1]
    per_pass = math.ceil(slices / batch)
    assert trainer.batch_size == batch
    assert trainer.num_epochs == epochs and trainer.num_iterations_per_epoch == passes * per_pass
    assert (f"{epochs} epochs x {passes} x ceil(labelled slices / {batch}) = {passes * per_pass} iterations "
            f"({epochs * passes * per_pass} in all)") in trainer.polycl_schedule_description()
    assert (f"one epoch = {passes} passes over the 1 labelled training cases' slices"
            in Path(trainer.log_file).read_text())


def test_demo_draws_progress_every_sixth_epoch_and_at_the_last(make_trainer):
    """nnU-Net redraws progress.png after every epoch; ``_demo`` after epochs 6 and 12 only (its training unchanged)."""
    trainer = make_trainer("nnUNetTrainerPolyCL_Baseline_demo")
    trainer.on_train_start()
    plot = Path(trainer.output_folder) / "progress.png"
    drawn = []
    for epoch in range(trainer.num_epochs):
        plot.unlink(missing_ok=True)
        trainer.on_epoch_start()
        for key, value in [("lrs", 1e-3), ("train_losses", -0.1), ("val_losses", -0.1), ("mean_fg_dice", 0.5),
                           ("dice_per_class_or_region", [0.5])]:
            trainer.logger.log(key, value, epoch)
        trainer.on_epoch_end()
        if plot.is_file():
            drawn.append(epoch)
    assert trainer.num_epochs == 12 and drawn == [5, 11]
    assert "Epoch time" in Path(trainer.log_file).read_text()  # the rest of nnU-Net's epoch end still runs


def test_demo_schedules_forward_five_validation_batches_and_still_draw_all(make_trainer, monkeypatch):
    """The epoch's pseudo Dice of ``_quick`` comes from 5 evenly spaced validation batches; every batch of the pass is
    still drawn, so the random stream the next training batches come from is the one a full validation leaves."""
    import numpy as np

    from nnunet_polycl.finetuning import schedules

    def validation_epoch() -> tuple[list[int], int, tuple]:
        trainer = make_trainer("nnUNetTrainerPolyCL_Baseline_quick_k1_seed0")
        trainer.on_train_start()
        forwarded = []
        trainer.network.register_forward_hook(lambda *_: forwarded.append(trainer._polycl_val_batch - 1))
        with torch.no_grad():  # nnU-Net's validation loop (nnUNetTrainer.run_training)
            trainer.on_validation_epoch_start()
            outputs = [trainer.validation_step(next(trainer.dataloader_val))
                       for _ in range(trainer.num_val_iterations_per_epoch)]
            trainer.on_validation_epoch_end(outputs)
        logged = trainer.logger.local_logger.my_fantastic_logging
        assert len(logged["mean_fg_dice"]) == 1  # one pseudo Dice for the epoch
        return forwarded, trainer.num_val_iterations_per_epoch, np.random.get_state()[1]

    forwarded, batches, stream = validation_epoch()
    assert batches > 5 and len(forwarded) == 5 and forwarded == sorted(set(forwarded))
    assert forwarded[0] == 0 and forwarded[-1] >= batches - math.ceil(batches / 5)  # spread over the whole pass
    monkeypatch.setattr(schedules, "DEMO_PSEUDO_DICE_BATCHES", batches)  # nnU-Net's: every batch forwarded
    every, _, stream_every = validation_epoch()
    assert every == list(range(batches))
    assert np.array_equal(stream, stream_every)
