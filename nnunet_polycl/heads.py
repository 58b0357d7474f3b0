"""The projection head g of PolyCL and the encoder + head pair that pre-training optimises.

Paper (Sec. 3.1): a global average pool at the end of the encoder f and a single fully connected layer as g give
256-d embeddings z = g(f(s)). After pre-training the head is discarded; only the encoder weights are kept.
"""
from __future__ import annotations

from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """Global average pool over all spatial axes + one Linear: [B, C, *spatial] -> [B, embed_dim].

    Raises:
        ValueError: in_channels or embed_dim < 1 (at construction); input without spatial axes or with another
            channel count (in forward).
    """

    def __init__(self, in_channels: int, embed_dim: int = 256):
        super().__init__()
        if in_channels < 1 or embed_dim < 1:
            raise ValueError(f"in_channels and embed_dim must be >= 1; got {in_channels} and {embed_dim}.")
        self.in_channels = in_channels
        self.linear = nn.Linear(in_channels, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"ProjectionHead expects [B, {self.in_channels}, *spatial]; got {list(x.shape)}.")
        return self.linear(x.flatten(2).mean(dim=2))


class ContrastiveEncoder(nn.Module):
    """z = g(f(s)): an nnU-Net encoder (``nnunet_polycl.network.encoder_of(net)``) followed by a ProjectionHead.

    The encoder is used as is (its parameters are shared with the network it came from). nnU-Net's encoders return
    the list of stage outputs (``return_skips=True``); the head pools the last one, the bottleneck.

    Args:
        encoder: a dynamic-network-architectures encoder (PlainConvEncoder, ResidualEncoder) with
            ``output_channels``.
        embed_dim: size of the embedding (paper: 256).

    Raises:
        ValueError: the encoder has no ``output_channels``.
    """

    def __init__(self, encoder: nn.Module, embed_dim: int = 256):
        super().__init__()
        channels = getattr(encoder, "output_channels", None)
        if not channels:
            raise ValueError(f"{type(encoder).__name__} has no 'output_channels'; pass the encoder of an nnU-Net "
                             f"network (nnunet_polycl.network.encoder_of(net)).")
        self.encoder = encoder
        self.head = ProjectionHead(int(channels[-1]), embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, embed_dim]."""
        features = self.encoder(x)
        if isinstance(features, (list, tuple)):
            features = features[-1]
        return self.head(features)
