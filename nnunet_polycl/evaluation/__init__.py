"""Evaluation: Dice and surface distances (mm) of prediction folders, and paper-style reports over repeated runs."""
from nnunet_polycl.evaluation.figures import curve_points, plot_against_k
from nnunet_polycl.evaluation.folders import evaluate_folders
from nnunet_polycl.evaluation.reports import method_table, write_method_table
from nnunet_polycl.evaluation.runs import run_means
from nnunet_polycl.evaluation.summary import summary_rows
from nnunet_polycl.evaluation.verdict import comparison_verdict

__all__ = ["comparison_verdict", "curve_points", "evaluate_folders", "method_table", "plot_against_k", "run_means",
           "summary_rows", "write_method_table"]
