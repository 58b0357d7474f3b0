"""``--c`` resumes from the checkpoint: the pre-trained encoder loaded in ``initialize`` never wins over it."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from nnunet_polycl.finetuning import CHECKPOINT_KEY, RECORD_FILE
from tests.finetuning.finetune_helpers import encoder_tensors, network_state, same_tensors


def test_resumed_run_continues_from_the_checkpoint_not_from_the_pretrained_encoder(write_pretraining, make_trainer):
    from nnunetv2.run.run_training import maybe_load_checkpoint

    weights_file = write_pretraining(seed=1)
    pretrained = encoder_tensors(torch.load(weights_file, weights_only=False)["network_weights"])
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
