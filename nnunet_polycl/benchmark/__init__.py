"""``polycl_benchmark``: pure compute, data path, end-to-end pre-training and fine-tuning speed, with ratios."""
from nnunet_polycl.benchmark.cli import run_benchmark
from nnunet_polycl.benchmark.settings import BenchmarkSettings
from nnunet_polycl.benchmark.stats import median, ratio

__all__ = ["BenchmarkSettings", "median", "ratio", "run_benchmark"]
