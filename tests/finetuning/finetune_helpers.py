"""Helpers of the fine-tuning tests: compare network state dicts."""
from __future__ import annotations

import torch


def encoder_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``encoder.*`` entries of a network state dict."""
    return {k: v for k, v in state.items() if k.startswith("encoder.")}


def decoder_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The decoder's own entries (not its ``decoder.encoder.*`` alias of the encoder, not the seg layers)."""
    return {k: v for k, v in state.items()
            if k.startswith("decoder.") and not k.startswith("decoder.encoder.") and ".seg_layers." not in k}


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Same keys and exactly equal values (compared on the CPU)."""
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def network_state(trainer) -> dict[str, torch.Tensor]:
    """CPU copy of the (unwrapped) network state of a trainer."""
    from nnunet_polycl.network import unwrap

    return {k: v.detach().cpu().clone() for k, v in unwrap(trainer.network).state_dict().items()}
