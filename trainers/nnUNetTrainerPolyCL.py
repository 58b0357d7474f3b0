"""The PolyCL fine-tuning trainers for nnU-Net's trainer lookup (``nnUNet_extTrainer``).

Only re-exports: the classes live in ``nnunet_polycl.finetuning.variants``. The forwarded module ``__getattr__``
makes every valid name of the grammar ``nnUNetTrainerPolyCL[_S|_O|_M|_SimCLR|_Baseline][_paper|_demo|_long|_short|_quick|_smoke][_k<k>]``
resolvable here as well, to the same class object.
"""
from nnunet_polycl.finetuning.variants import *  # noqa: F401,F403
from nnunet_polycl.finetuning.variants import __all__, __getattr__  # noqa: F401
