"""Fine-tuning stage: ``nnUNetTrainerPolyCL`` and its variants (see :mod:`.variants` for the name grammar)."""
from nnunet_polycl.finetuning.labelled_subset import SUBSET_FILE, SUBSET_SEED
from nnunet_polycl.finetuning.pretrained import OVERRIDE_VARIABLE
from nnunet_polycl.finetuning.trainer import CHECKPOINT_KEY, RECORD_FILE, nnUNetTrainerPolyCL
from nnunet_polycl.finetuning.variants import is_variant_name, trainer_class

__all__ = ["OVERRIDE_VARIABLE", "CHECKPOINT_KEY", "RECORD_FILE", "SUBSET_FILE", "SUBSET_SEED", "nnUNetTrainerPolyCL",
           "is_variant_name", "trainer_class"]
