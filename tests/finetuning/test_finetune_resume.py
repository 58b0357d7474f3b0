"""``--c`` resumes from the checkpoint: the pre-trained encoder loaded in ``initialize`` never wins over it."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from nnunet_polycl.finetuning.trainer import CHECKPOINT_KEY, RECORD_FILE
from tests.finetuning.finetune_helpers import encoder_tensors, network_state, same_tensors


def test_resumed_run_continues_from_the_checkpoint_not_from_the_pretrained_encoder(write_pretraining, make_trainer):
    from nnunetv2.run.run_training import maybe_load_checkpoint

    weights_file = write_pretraining(seed=1)
    pretrained = encoder_tensors(torch.load(weights_file, weights_only=True)["network_weights"])
    first = make_trainer("nnUNetTrainerPolyCL_smoke")
    first.num_epochs = 1  # a run stopped after its first epoch
    first.num_iterations_per_epoch = first.num_val_iterations_per_epoch = 1  # keep the test short
    first.run_training()
    checkpoint_file = Path(first.output_folder) / "checkpoint_final.pth"
    checkpoint = torch.load(checkpoint_file, weights_only=False)
    assert checkpoint["current_epoch"] == 1 and checkpoint[CHECKPOINT_KEY] == first.polycl_record
    trained = {k: v.cpu() for k, v in checkpoint["network_weights"].items()}
    assert not same_tensors(encoder_tensors(trained), pretrained)

    write_pretraining(seed=2)  # the pre-training is redone meanwhile: the resumed run still started from seed 1
    resumed = make_trainer("nnUNetTrainerPolyCL_smoke", continue_training=True)  # nnUNetv2_train ... --c
    resumed.num_iterations_per_epoch = resumed.num_val_iterations_per_epoch = 1
    maybe_load_checkpoint(resumed, continue_training=True, validation_only=False)
    assert resumed.current_epoch == 1 and resumed.num_epochs == 2
    assert same_tensors(network_state(resumed), trained)
    assert resumed.polycl_record == first.polycl_record
    assert json.loads((Path(resumed.output_folder) / RECORD_FILE).read_text()) == first.polycl_record

    resumed.run_training()
    final = torch.load(checkpoint_file, weights_only=False)
    assert final["current_epoch"] == 2
    assert final[CHECKPOINT_KEY]["pretrained_weights"]["sha256"] == first.polycl_record["pretrained_weights"]["sha256"]
    assert len(final["logging"]["train_losses"]) == 2  # one curve across both runs


def test_resume_rebuilds_the_optimiser_of_the_stage_the_checkpoint_was_written_in(make_trainer):
    from nnunetv2.run.run_training import maybe_load_checkpoint

    from nnunet_polycl.network import encoder_of

    name = "nnUNetTrainerPolyCL_Baseline_smoke_decoderfirst"  # epoch 0: decoder only; epoch 1: whole network
    first = make_trainer(name)
    first.num_iterations_per_epoch = first.num_val_iterations_per_epoch = 1
    first.on_train_start()
    first.on_train_epoch_start()
    first.train_step(next(first.dataloader_train))
    first.current_epoch = 0
    first.save_checkpoint(str(Path(first.output_folder) / "checkpoint_latest.pth"))  # after epoch 0, in stage 0
    saved = torch.load(Path(first.output_folder) / "checkpoint_latest.pth", weights_only=False)
    encoder = {id(p) for p in encoder_of(first.network).parameters()}
    assert len(saved["optimizer_state"]["param_groups"][0]["params"]) == \
        sum(1 for p in first.network.parameters() if id(p) not in encoder)

    resumed = make_trainer(name, continue_training=True)
    maybe_load_checkpoint(resumed, continue_training=True, validation_only=False)  # decoder-only state loads
    assert resumed.current_epoch == 1 and resumed.polycl_stage.name == "warmup_decoder"
    resumed.on_train_epoch_start()  # epoch 1 switches to the whole network
    assert resumed.polycl_stage.name == "warmup_all"
    assert {id(p) for p in encoder_of(resumed.network).parameters()} <= \
        {id(p) for g in resumed.optimizer.param_groups for p in g["params"]}
