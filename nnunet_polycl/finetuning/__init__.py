"""Fine-tuning stage: ``nnUNetTrainerPolyCL`` (:mod:`.trainer`) and its variants (see :mod:`.variants` for the name
grammar).

Nothing is imported here: ``polycl_validate``'s worker processes (nnU-Net's validation spawns them, and each imports
the command's module anew) then load torch and nnU-Net's export code only, not the whole trainer stack.
"""
