"""Evaluation: Dice and surface distances (mm) of prediction folders, and paper-style reports over runs."""
from nnunet_polycl.evaluation.folders import evaluate_folders
from nnunet_polycl.evaluation.summary import summary_rows

__all__ = ["evaluate_folders", "summary_rows"]
