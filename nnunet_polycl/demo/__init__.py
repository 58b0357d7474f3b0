"""The built-in synthetic demo dataset (``polycl_demo make-dataset``).

Small abdominal CT-like scans with a liver-like target organ that appears in only part of each scan's slices, written
in nnU-Net's raw format so that the whole PolyCL pipeline (plan and preprocess, pre-train, fine-tune, predict) can be
tried and tested on a CPU in minutes.
"""
from nnunet_polycl.demo.dataset import (
    DEFAULT_NUM_SCANS,
    DEMO_DATASET_ID,
    DemoDataset,
    case_identifier,
    demo_dataset_name,
    folders_with_id,
    make_demo_dataset,
)
from nnunet_polycl.demo.synthetic_ct import LIVER_LABEL, SyntheticScan, generate_scan, organ_slice_counts

__all__ = ["DEFAULT_NUM_SCANS", "DEMO_DATASET_ID", "LIVER_LABEL", "DemoDataset", "SyntheticScan", "case_identifier",
           "demo_dataset_name", "folders_with_id", "generate_scan", "make_demo_dataset", "organ_slice_counts"]
