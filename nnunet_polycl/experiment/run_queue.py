"""When each run of an experiment may start: it waits for what it needs, not for every run of an earlier kind.

- A baseline run, or the first run of a pre-training that needs no baseline: nothing.
- The first run of a pre-training on pseudo-labels (O-pseudo): the fine-tuning of its own baseline run, when that
  baseline is among the runs to do (a finished baseline is on disk already).
- Every other run: its pre-training, which the first run using it makes.

So no two jobs write the same pre-training, pseudo-labels come from a finished baseline, and a seed's O-pseudo
pre-training starts when that seed's baseline is fine-tuned, while other seeds' baselines still run. Among the runs
that may start, the baselines and the independent pre-trainings go first (other runs wait for them), then the
pseudo-label pre-trainings, then the rest, each group in the experiment's order.
"""
from __future__ import annotations

from nnunet_polycl.experiment.layout import RunSpec
from nnunet_polycl.experiment.presets import uses_pseudo_labels


def pretrained_milestone(pretraining_name: str) -> str:
    """What a run reports once the pre-training ``pretraining_name`` is made (or found made)."""
    return f"pre-training {pretraining_name}"


def finetuned_milestone(run_name: str) -> str:
    """What a run reports once its fine-tuning is done (or found done)."""
    return f"fine-tuning {run_name}"


class RunQueue:
    """The runs still to start, with what each needs; :meth:`reached` records a milestone, :meth:`pop_ready` takes
    the first run whose needs are all met."""

    def __init__(self, runs: list[RunSpec]):
        names = {run.name for run in runs}
        owners: set[str] = set()
        entries = []
        for index, run in enumerate(runs):
            pretraining = run.pretraining_name
            if pretraining is None:
                rank, needs = 0, set()
            elif pretraining in owners:
                rank, needs = 2, {pretrained_milestone(pretraining)}
            else:
                owners.add(pretraining)
                pseudo, baseline = uses_pseudo_labels(run.method), run.baseline.name
                rank, needs = int(pseudo), ({finetuned_milestone(baseline)} if pseudo and baseline in names else set())
            entries.append((rank, index, run, frozenset(needs)))
        self._waiting = [(run, needs) for *_, run, needs in sorted(entries, key=lambda e: e[:2])]
        self._reached: set[str] = set()

    def __len__(self) -> int:
        return len(self._waiting)

    def order(self) -> list[RunSpec]:
        """Every waiting run in the order one job runs them (each after what it needs)."""
        return [run for run, _ in self._waiting]

    def reached(self, milestone: str) -> None:
        self._reached.add(milestone)

    def pop_ready(self) -> RunSpec | None:
        """The first waiting run whose needs are met, removed from the queue (None: none may start yet)."""
        for i, (run, needs) in enumerate(self._waiting):
            if needs <= self._reached:
                del self._waiting[i]
                return run
        return None
