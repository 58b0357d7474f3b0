"""When an experiment's runs start: each waits for what it needs (its pre-training, or for O-pseudo its own
baseline's fine-tuning), not for every run of an earlier kind."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from nnunet_polycl.experiment import runner
from nnunet_polycl.experiment.layout import RunSpec, run_grid
from nnunet_polycl.experiment.process import StepFailedError
from nnunet_polycl.experiment.run_queue import RunQueue, finetuned_milestone, pretrained_milestone


def _ready(queue: RunQueue) -> list[str]:
    """Take every run that may start now; their short names (method, seed)."""
    taken = []
    while (run := queue.pop_ready()) is not None:
        taken.append(f"{run.method} {run.seed}")
    return taken


def _named(runs: list[RunSpec], method: str, seed: int) -> RunSpec:
    return next(r for r in runs if r.method == method and r.seed == seed)


def test_an_o_pseudo_pretraining_waits_for_its_own_baseline_only():
    runs = run_grid(("baseline", "O", "O-pseudo"), ("default",), (0, 1), (1,), unlabelled=3)
    queue = RunQueue(runs)
    assert _ready(queue) == ["baseline 0", "O 0", "baseline 1", "O 1"]  # nothing of O-pseudo before a baseline
    queue.reached(pretrained_milestone(_named(runs, "O", 0).pretraining_name))
    assert _ready(queue) == []
    queue.reached(finetuned_milestone(_named(runs, "baseline", 1).name))  # seed 0's baseline still runs
    assert _ready(queue) == ["O-pseudo 1"] and len(queue) == 1
    queue.reached(finetuned_milestone(_named(runs, "baseline", 0).name))
    assert _ready(queue) == ["O-pseudo 0"] and len(queue) == 0


def test_runs_sharing_a_pretraining_start_once_it_is_made_not_when_its_first_run_ends():
    runs = run_grid(("baseline", "O"), ("default", "O=layerwise"), (0, 1, 2), (1,), shared_pretraining=True)
    queue = RunQueue(runs)
    assert _ready(queue) == ["baseline 0", "O 0", "baseline 1", "baseline 2"]
    queue.reached(pretrained_milestone(_named(runs, "O", 0).pretraining_name))
    assert _ready(queue) == ["O 1", "O 2"]


def test_an_o_pseudo_whose_baseline_finished_in_an_earlier_call_waits_for_nothing():
    runs = run_grid(("baseline", "O-pseudo"), ("default",), (0,), (1,), unlabelled=3)
    assert _ready(RunQueue([r for r in runs if r.method == "O-pseudo"])) == ["O-pseudo 0"]


@pytest.mark.parametrize("methods, shared", [(("baseline", "S", "O", "O-pseudo"), False), (("baseline", "O"), True)])
def test_one_job_runs_every_run_after_what_it_needs(methods, shared):
    runs = run_grid(methods, ("default", "layerwise"), (0, 1, 2), (1, 2), shared_pretraining=shared, unlabelled=3)
    order = RunQueue(runs).order()
    assert sorted(r.name for r in order) == sorted(r.name for r in runs)
    made, finetuned = set(), set()
    for run in order:
        if run.pretraining_name is not None and run.pretraining_name not in made:
            made.add(run.pretraining_name)
            assert run.method != "O-pseudo" or run.baseline.name in finetuned
        finetuned.add(run.name)


def test_a_seeds_o_pseudo_starts_while_another_seeds_baseline_still_runs(monkeypatch):
    """Two jobs: seed 1's baseline runs until seed 0's O-pseudo has started (it used to wait for every baseline)."""
    runs = run_grid(("baseline", "O-pseudo"), ("default",), (0, 1), (1,), unlabelled=3)
    pseudo_of_seed0_started = threading.Event()
    finished = []

    def do_run(ctx, run, reached):
        if run.method == "O-pseudo" and run.seed == 0:
            pseudo_of_seed0_started.set()
        if run.method == "baseline" and run.seed == 1 and not pseudo_of_seed0_started.wait(timeout=20):
            raise StepFailedError("seed 0's O-pseudo did not start while seed 1's baseline ran")
        if run.pretraining_name is not None:
            reached(pretrained_milestone(run.pretraining_name))
        reached(finetuned_milestone(run.name))
        return {}

    monkeypatch.setattr(runner, "_do_run", do_run)
    monkeypatch.setattr(runner, "_finish", lambda ctx, result, run, record: finished.append(f"{run.method} {run.seed}"))
    runner._run_all(SimpleNamespace(jobs=2), None, runs)
    assert finished[0] == "baseline 0" and sorted(finished) == ["O-pseudo 0", "O-pseudo 1", "baseline 0", "baseline 1"]
    assert finished.index("O-pseudo 1") > finished.index("baseline 1")


def test_after_a_failed_run_no_waiting_run_starts(monkeypatch):
    """A run that fails while another runs: the other is finished as usual, no further run starts, the error is
    raised."""
    runs = run_grid(("baseline",), ("default",), (0, 1, 2, 3), (1,))
    started, finished = [], []
    second_started, second_may_end = threading.Event(), threading.Event()

    def do_run(ctx, run, reached):
        started.append(run.seed)
        if run.seed == 0:
            second_started.wait(timeout=5)
            raise StepFailedError("fine-tuning of seed 0 failed")
        second_started.set()
        second_may_end.wait(timeout=5)  # seed 1 is still running when seed 0 fails
        return {}

    monkeypatch.setattr(runner, "_do_run", do_run)
    monkeypatch.setattr(runner, "_finish", lambda ctx, result, run, record: finished.append(run.seed))
    threading.Timer(1.0, second_may_end.set).start()
    with pytest.raises(StepFailedError, match="seed 0 failed"):
        runner._run_all(SimpleNamespace(jobs=2), None, runs)
    assert started == [0, 1] and finished == [1]
