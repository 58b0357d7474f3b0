"""nnunet-polycl: PolyCL contrastive pre-training (Moseley & Imran, ISBI 2024) for nnU-Net v2's 2D encoder."""

__version__ = "0.1.0"
