"""What ``initialize`` does, on the preprocessed demo dataset, with trainers built as ``nnUNetv2_train`` builds them.

Pre-trained encoder in, fresh decoder, the record in log / json, the Dice-only loss, the paper schedule, the
``-pretrained_weights`` and ``$POLYCL_PRETRAINED_WEIGHTS`` overrides, the random-init baseline.
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_polycl.finetuning.pretrained import OVERRIDE_VARIABLE
from nnunet_polycl.finetuning.trainer import RECORD_FILE
from tests.finetuning.finetune_helpers import decoder_tensors, encoder_tensors, network_state, same_tensors


def initialized(make_trainer, name: str, seed: int = 100):
    trainer = make_trainer(name)
    torch.manual_seed(seed)
    trainer.initialize()
    return trainer


def test_encoder_equals_the_pretrained_one_and_decoder_is_nnunets_fresh_init(write_pretraining, make_trainer):
    path = write_pretraining(seed=1)
    weights = torch.load(path, weights_only=True)["network_weights"]
    polycl = network_state(initialized(make_trainer, "nnUNetTrainerPolyCL_smoke", seed=7))
    stock = network_state(initialized(make_trainer, "nnUNetTrainer", seed=7))

    assert same_tensors(encoder_tensors(polycl), encoder_tensors(weights))
    assert not same_tensors(encoder_tensors(stock), encoder_tensors(weights))
    # the decoder is exactly what nnU-Net initialises (same seed), not the decoder stored in the weights file
    assert same_tensors(decoder_tensors(polycl), decoder_tensors(stock))
    conv_weights = [k for k, v in decoder_tensors(weights).items() if v.ndim > 1]
    assert conv_weights and all(not torch.equal(polycl[k], weights[k]) for k in conv_weights)


def test_loaded_file_is_recorded_in_log_and_json(write_pretraining, make_trainer):
    path = write_pretraining(strategy="S")
    trainer = initialized(make_trainer, "nnUNetTrainerPolyCL_S_smoke")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    record = json.loads((Path(trainer.output_folder) / RECORD_FILE).read_text())
    assert record == trainer.polycl_record
    assert record["trainer"] == "nnUNetTrainerPolyCL_S_smoke" and record["strategy"] == "S"
    assert record["pretrained_weights"]["path"] == str(path)
    assert record["pretrained_weights"]["sha256"] == sha
    assert record["pretrained_weights"]["strategy"] == "S" and record["pretrained_weights"]["pretraining_epochs"] == 3
    assert record["pretrained_weights"]["source"] == "default location"
    log = Path(trainer.log_file).read_text()
    assert str(path) in log and sha in log and "strategy S" in log and "3 pre-training epochs" in log


def _reference_soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """-(mean over foreground classes of the batch soft Dice), written out directly."""
    probs = torch.softmax(logits, 1)
    dices = []
    for c in range(1, logits.shape[1]):
        p, g = probs[:, c], (target[:, 0] == c).float()
        dices.append((2 * (p * g).sum() + smooth) / (p.sum() + g.sum() + smooth))
    return -torch.stack(dices).mean()


def test_loss_is_nnunets_deep_supervised_loss_without_cross_entropy(write_pretraining, make_trainer):
    write_pretraining()
    polycl = initialized(make_trainer, "nnUNetTrainerPolyCL_smoke")
    stock = initialized(make_trainer, "nnUNetTrainer")
    assert polycl.configuration_manager.batch_dice
    torch.manual_seed(0)
    with torch.no_grad():
        outputs = polycl.network(torch.randn(2, 1, *polycl.configuration_manager.patch_size))
    targets = [torch.randint(0, 2, (2, 1, *o.shape[2:])).float() for o in outputs]
    weights = np.array([1 / 2 ** i for i in range(len(outputs))])
    weights[-1] = 0
    weights /= weights.sum()

    expected_dice = sum(w * _reference_soft_dice_loss(o, t) for w, o, t in zip(weights, outputs, targets, strict=True))
    expected_ce = sum(w * torch.nn.functional.cross_entropy(o, t[:, 0].long()) for w, o, t in
                      zip(weights, outputs, targets, strict=True))
    assert torch.allclose(polycl.loss(outputs, targets), expected_dice, atol=1e-5)
    assert torch.allclose(stock.loss(outputs, targets), expected_dice + expected_ce, atol=1e-5)


def test_dice_only_also_for_region_losses():
    from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    from nnunet_polycl.finetuning.loss import dice_only

    kwargs = {"batch_dice": True, "do_bg": True, "smooth": 1e-5, "ddp": False}
    loss = dice_only(DC_and_BCE_loss({}, kwargs, use_ignore_label=True, dice_class=MemoryEfficientSoftDiceLoss))
    logits, target = torch.randn(2, 2, 16, 16), torch.randint(0, 2, (2, 3, 16, 16))
    dice = MemoryEfficientSoftDiceLoss(apply_nonlin=torch.sigmoid, **kwargs)
    expected = dice(logits, target[:, :-1], loss_mask=(1 - target[:, -1:]).bool())
    assert torch.allclose(loss(logits, target), expected)
    with pytest.raises(TypeError, match="DC_and_CE_loss or DC_and_BCE_loss"):
        dice_only(torch.nn.CrossEntropyLoss())


def test_paper_schedule_is_adam_with_cosine_restarts_every_10_epochs(write_pretraining, make_trainer):
    write_pretraining()
    trainer = initialized(make_trainer, "nnUNetTrainerPolyCL_paper")
    assert trainer.num_epochs == 100 and isinstance(trainer.optimizer, torch.optim.Adam)
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for epoch in [0, 1, 5, 9, 10, 11, 25, 99, 3]:  # nnU-Net: lr_scheduler.step(current_epoch) per epoch
            trainer.lr_scheduler.step(epoch)
            expected = 1e-3 * (1 + math.cos(math.pi * (epoch % 10) / 10)) / 2
            assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_pretrained_weights_flag_is_applied_after_initialize_and_wins(write_pretraining, make_trainer, tmp_path):
    from nnunetv2.run.run_training import maybe_load_checkpoint

    write_pretraining(seed=1)
    other = write_pretraining(seed=2, path=tmp_path / "elsewhere" / "pretrained_weights.pth")
    weights = torch.load(other, weights_only=True)["network_weights"]
    for name in ("nnUNetTrainer", "nnUNetTrainerPolyCL_smoke"):  # stock trainer: nnU-Net loads our file
        trainer = make_trainer(name)
        maybe_load_checkpoint(trainer, continue_training=False, validation_only=False,
                              pretrained_weights_file=str(other))
        state = network_state(trainer)
        assert same_tensors(encoder_tensors(state), encoder_tensors(weights))
        assert same_tensors(decoder_tensors(state), decoder_tensors(weights))


def test_override_variable_selects_and_records_another_file(write_pretraining, make_trainer, tmp_path, monkeypatch):
    other = write_pretraining(strategy="M", seed=3, path=tmp_path / "moved" / "pretrained_weights.pth")
    monkeypatch.setenv(OVERRIDE_VARIABLE, str(other))
    trainer = initialized(make_trainer, "nnUNetTrainerPolyCL_M_smoke")
    weights = torch.load(other, weights_only=True)["network_weights"]
    assert same_tensors(encoder_tensors(network_state(trainer)), encoder_tensors(weights))
    record = json.loads((Path(trainer.output_folder) / RECORD_FILE).read_text())["pretrained_weights"]
    assert record["source"] == OVERRIDE_VARIABLE and record["path"] == str(other)
    assert OVERRIDE_VARIABLE in Path(trainer.log_file).read_text()


def test_baseline_starts_from_random_weights_and_ignores_the_override(make_trainer, monkeypatch, tmp_path):
    monkeypatch.setenv(OVERRIDE_VARIABLE, str(tmp_path / "does_not_matter.pth"))
    baseline = network_state(initialized(make_trainer, "nnUNetTrainerPolyCL_Baseline_smoke", seed=5))
    stock = initialized(make_trainer, "nnUNetTrainer", seed=5)
    assert same_tensors(baseline, network_state(stock))
    trainer = make_trainer("nnUNetTrainerPolyCL_Baseline_smoke")
    trainer.initialize()
    record = json.loads((Path(trainer.output_folder) / RECORD_FILE).read_text())
    assert record["pretrained_weights"] is None and record["strategy"] is None
    assert f"{OVERRIDE_VARIABLE} is ignored" in Path(trainer.log_file).read_text()
