"""``polycl_experiment``: the paper's protocol (methods x seeds x label budgets k) with resumable runs and reports."""
from nnunet_polycl.experiment.presets import METHODS, PRESETS, Preset, ProtocolSettings
from nnunet_polycl.experiment.runner import ExperimentRequest, ExperimentResult, run_experiment

__all__ = ["METHODS", "PRESETS", "ExperimentRequest", "ExperimentResult", "Preset", "ProtocolSettings",
           "run_experiment"]
