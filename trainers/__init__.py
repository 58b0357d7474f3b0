"""Directory that ``nnUNet_extTrainer`` points at (see ``polycl_env``).

nnU-Net imports every module here as a top-level module. Each module is thin: it only imports the real trainer
classes from ``nnunet_polycl.finetuning``, so that exactly one class object exists per trainer name.
"""
