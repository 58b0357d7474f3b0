"""polycl_benchmark: the statistics it reports, its input checks, and a real tiny run on the demo dataset.

The tiny run asserts that every figure and ratio is in the JSON, finite and positive, and that the run left the
user's nnU-Net results alone; never the speeds themselves (timings flake on shared machines).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nnunet_polycl.benchmark.cli import benchmark_entry
from nnunet_polycl.benchmark.pretraining_workloads import items_from_epochs
from nnunet_polycl.benchmark.stats import median, paired_ratio, rates, ratio, summarise
from nnunet_polycl.benchmark.timing import measure_interleaved
from tests.conftest import run_cli


def test_median_over_repeats():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert median([7.5]) == 7.5
    with pytest.raises(ValueError, match="at least one repeat"):
        median([])
    with pytest.raises(ValueError, match="non-finite"):
        median([1.0, math.nan])


def test_ratio_and_rates():
    assert ratio(3.0, 1.5) == 2.0
    for bad in ((1.0, 0.0), (0.0, 1.0), (1.0, math.inf), (-1.0, 1.0)):
        with pytest.raises(ValueError, match="finite number > 0"):
            ratio(*bad)
    assert rates(20, [2.0, 4.0]) == [10.0, 5.0]
    with pytest.raises(ValueError, match="repeat duration"):
        rates(20, [1.0, 0.0])


def test_paired_ratio_is_the_median_of_per_repeat_ratios():
    # repeat 3 ran while the machine was busy: both figures dropped, their ratio did not
    compute, end_to_end = [10.0, 10.0, 2.0, 10.0], [9.0, 9.5, 1.9, 9.8]
    assert paired_ratio(end_to_end, compute) == pytest.approx(0.95)
    assert ratio(median(end_to_end), median(compute)) == pytest.approx(0.925)
    with pytest.raises(ValueError, match="as many repeats"):
        paired_ratio([1.0, 2.0], [1.0])


def test_summary_is_the_median_rate_of_the_repeats():
    figure = summarise(60, [1.0, 3.0, 2.0], "triplets/s")
    assert figure["median"] == 30.0  # rates 60, 20, 30
    assert figure["per_repeat"] == [60.0, 20.0, 30.0]
    assert figure["seconds_per_repeat"] == [1.0, 3.0, 2.0] and figure["unit"] == "triplets/s"


def test_repeats_are_interleaved_across_workloads():
    calls = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def run(self, units):
            calls.append((self.name, units))

    import torch

    durations = measure_interleaved([(Recorder("a"), 2), (Recorder("b"), 5)], 3, torch.device("cpu"))
    assert calls == [("a", 2), ("b", 5)] * 3
    assert [len(d) for d in durations] == [3, 3] and all(s >= 0 for d in durations for s in d)


def test_steps_longer_than_an_epoch_continue_with_the_next_epochs():
    epochs = {e: np.arange(5) + 100 * e for e in range(4)}
    items = items_from_epochs(epochs.__getitem__, 1, 12)
    np.testing.assert_array_equal(items, np.concatenate([epochs[1], epochs[2], epochs[3][:2]]))


@pytest.mark.parametrize("args, message", [
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--steps", "0", "--batch-size", "0"], "--batch-size must be >= 1 (got 0); --steps must be >= 1"),
    (["--patch", "4", "256", "--threads", "0"], "--threads must be >= 1 (got 0); --patch sizes must be >= 8"),
    (["--ddp-processes", "-1"], "--ddp-processes must be >= 0 (got -1)"),
])
def test_bad_numbers_are_rejected_before_any_work(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark_entry(["-device", "cpu", "-o", str(tmp_path / "r.json"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()


def _check_figure(figure: dict, unit: str, repeats: int) -> None:
    assert figure["unit"] == unit
    assert len(figure["per_repeat"]) == repeats
    values = [figure["median"], *figure["per_repeat"], *figure["seconds_per_repeat"], figure["items_per_repeat"]]
    assert all(math.isfinite(v) and v > 0 for v in values), figure


@pytest.mark.e2e
def test_tiny_benchmark_reports_every_figure(demo_env, tmp_path, capsys):
    out = tmp_path / "bench.json"
    # one torch thread: on a shared machine, two threads that wait for each other make the run several times slower
    proc = run_cli(["polycl_benchmark", "--tiny", "-device", "cpu", "--threads", "1", "-o", str(out)], demo_env,
                   timeout=600)
    result = json.loads(out.read_text())
    figures, repeats = result["figures"], result["settings"]["repeats"]
    assert repeats >= 2 and result["dataset"] == "Dataset990_PolyCLDemo" and result["machine"]["torch_threads"] == 1
    for name in ("compute", "data_path", "end_to_end"):
        _check_figure(figures[name], "triplets/s", repeats)
    for name in ("stock", "polycl"):
        _check_figure(figures["finetuning"][name], "iterations/s", repeats)
    assert figures["finetuning"]["stock"]["trainer"] == "nnUNetTrainer"
    assert figures["finetuning"]["polycl"]["trainer"] == "nnUNetTrainerPolyCL"
    assert figures["compute"]["peak_memory_bytes"] > 0
    multi = figures["multi_process"]  # figure 5: 1 against 2 gloo processes, each with the same per-process batch
    assert multi["processes"] == 2 and multi["backend"] == "gloo" and multi["per_process_batch"] == 4
    _check_figure(multi["one_process"], "triplets/s", repeats)
    _check_figure(multi["n_processes"], "triplets/s", repeats)
    assert multi["n_processes"]["items_per_repeat"] == 2 * multi["one_process"]["items_per_repeat"]
    assert multi["scaling_efficiency"] == pytest.approx(paired_ratio(  # repeats of both ran interleaved
        multi["n_processes"]["per_repeat"], [2 * r for r in multi["one_process"]["per_repeat"]]))
    ratios = result["headline"]["ratios"]
    assert set(ratios) == {"data_path_over_compute", "end_to_end_over_compute", "finetuning_polycl_over_stock",
                           "multi_process_scaling_efficiency"}
    assert all(math.isfinite(v) and v > 0 for v in ratios.values())
    for row in ("1 pure compute", "2 data path", "3 end to end", "4 fine-tuning nnUNetTrainerPolyCL",
                "ratio data path over compute", "ratio end to end over compute", "ratio finetuning polycl over stock",
                "5 multi-process, 1 process (gloo)", "5 multi-process, 2 processes (gloo)",
                "ratio multi process scaling efficiency"):
        assert row in proc.stdout
    # the trainers and the pre-training ran in a scratch folder: the user's nnUNet_results stays empty
    assert not any((tmp_path / "results").iterdir())
    assert (tmp_path / "bench.nnunet.log").read_text().strip()

    with pytest.raises(SystemExit) as exit_info:  # refused before any work: no nnU-Net folders needed
        benchmark_entry(["--tiny", "-device", "cpu", "-o", str(out)])
    assert exit_info.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert json.loads(out.read_text()) == result
