"""The nnU-Net network of a dataset's plans, built exactly as ``nnUNetTrainer`` builds it.

Both stages use this module: pre-training trains ``build_plans_network(...).encoder``; fine-tuning loads the result
into the network that nnU-Net builds. Keys and shapes therefore match by construction.
"""
from __future__ import annotations

from dataclasses import dataclass
from os.path import isfile, join

import torch
from torch import nn

from nnunet_polycl.paths import PolyCLUserError, preprocessed_dataset_folder


@dataclass
class PlansContext:
    """Everything nnU-Net knows about one dataset / plans / configuration, loaded once."""

    dataset_name: str
    plans_identifier: str
    configuration: str
    plans: dict
    dataset_json: dict
    preprocessed_folder: str  # $nnUNet_preprocessed/DatasetXXX
    data_folder: str  # .../<data_identifier>, e.g. nnUNetPlans_2d

    @property
    def plans_manager(self):
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        return PlansManager(self.plans)

    @property
    def configuration_manager(self):
        return self.plans_manager.get_configuration(self.configuration)

    @property
    def patch_size(self) -> tuple[int, ...]:
        return tuple(self.configuration_manager.patch_size)


def load_plans_context(dataset_name: str, plans_identifier: str = "nnUNetPlans",
                       configuration: str = "2d", require_data: bool = True) -> PlansContext:
    """Load plans and dataset.json of a preprocessed dataset, with clear errors when something is missing.

    Raises:
        PolyCLUserError: plans file, configuration or preprocessed data folder missing, or the configuration's
            network is not 2D.
    """
    from batchgenerators.utilities.file_and_folder_operations import load_json

    base = preprocessed_dataset_folder(dataset_name)
    plans_file = join(base, plans_identifier + ".json")
    if not isfile(plans_file):
        raise PolyCLUserError(
            f"No plans file {plans_file}. Run nnUNetv2_plan_and_preprocess -d {dataset_name} (with -pl / -overwrite_"
            f"plans_name if you use plans other than nnUNetPlans), or pass the right plans identifier with -p."
        )
    plans = load_json(plans_file)
    if configuration not in plans["configurations"]:
        raise PolyCLUserError(
            f"Configuration {configuration!r} is not in {plans_file}; available: "
            f"{sorted(plans['configurations'])}."
        )
    ctx = PlansContext(dataset_name, plans_identifier, configuration, plans, load_json(join(base, "dataset.json")),
                       base, "")
    if len(ctx.patch_size) != 2:
        raise PolyCLUserError(
            f"Configuration {configuration!r} of {plans_identifier} has a {len(ctx.patch_size)}D network (patch size "
            f"{list(ctx.patch_size)}). PolyCL pre-trains and fine-tunes 2D encoders: use -c 2d."
        )
    ctx.data_folder = join(base, ctx.configuration_manager.data_identifier)
    if require_data:
        from os.path import isdir

        if not isdir(ctx.data_folder):
            raise PolyCLUserError(
                f"{ctx.data_folder} does not exist: the {configuration} configuration of {plans_identifier} has not "
                f"been preprocessed. Run nnUNetv2_plan_and_preprocess -d {dataset_name} -c {configuration} "
                f"(or nnUNetv2_preprocess -d {dataset_name} -plans_name {plans_identifier} -c {configuration})."
            )
    return ctx


def build_plans_network(ctx: PlansContext, enable_deep_supervision: bool = True) -> nn.Module:
    """Build the full segmentation network exactly as ``nnUNetTrainer.initialize`` does."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    pm, cm = ctx.plans_manager, ctx.configuration_manager
    num_inputs = determine_num_input_channels(pm, cm, ctx.dataset_json)
    num_outputs = pm.get_label_manager(ctx.dataset_json).num_segmentation_heads
    return nnUNetTrainer.build_network_architecture(pm, cm, num_inputs, num_outputs, enable_deep_supervision)


def unwrap(network: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        if isinstance(network, nn.parallel.DistributedDataParallel):
            network = network.module
        elif hasattr(network, "_orig_mod"):
            network = network._orig_mod
        else:
            return network


def encoder_of(network: nn.Module) -> nn.Module:
    """The encoder of an nnU-Net network (PlainConvUNet, ResidualEncoderUNet, ...)."""
    net = unwrap(network)
    if not hasattr(net, "encoder"):
        raise PolyCLUserError(
            f"{type(net).__name__} has no attribute 'encoder'; PolyCL supports the dynamic-network-architectures "
            f"U-Nets that nnU-Net's plans use (PlainConvUNet, ResidualEncoderUNet)."
        )
    return net.encoder


def full_network_state_with_encoder(ctx: PlansContext, encoder_state: dict[str, torch.Tensor]) -> dict:
    """State dict of the full plans network with ``encoder_state`` loaded into its encoder (tensors on CPU).

    Saved as ``{'network_weights': ...}`` this is what ``nnUNetv2_train -pretrained_weights`` expects. A real
    ``state_dict()`` is taken so that the ``encoder.*`` / ``decoder.encoder.*`` aliases agree.
    """
    net = build_plans_network(ctx)
    encoder_of(net).load_state_dict(encoder_state, strict=True)
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def mismatched_keys(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor],
                    skip: tuple[str, ...] = (".seg_layers.",)) -> list[str]:
    """Human-readable list of keys missing from ``given`` or with another shape than in ``expected``."""
    problems = []
    for key, tensor in expected.items():
        if any(s in key for s in skip):
            continue
        if key not in given:
            problems.append(f"{key}: missing")
        elif tuple(given[key].shape) != tuple(tensor.shape):
            problems.append(f"{key}: shape {tuple(given[key].shape)} instead of {tuple(tensor.shape)}")
    return problems
