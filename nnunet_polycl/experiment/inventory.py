"""Which runs an experiment planned and what became of them, the settings sets behind its finished runs, and how many
distinct labelled subsets they cover: the lines every report ends with.

A planned run (from every call recorded in ``experiment.json``) is *finished* (readable ``finished.json``),
*unreadable* (a ``finished.json`` that cannot be read: named, never skipped silently), *failed or unfinished* (its
folder exists without a marker: the last line of its newest log says why) or *missing* (never started).
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from os.path import isdir, isfile, join

from nnunet_polycl.experiment.layout import FINISHED_FILE, INTERRUPTED, ExperimentLayout, run_grid, run_settings
from nnunet_polycl.experiment.presets import parse_k, pretraining_strategy

LOGS = ("predict.log", "finetune.log")
STATES = ("finished", "failed or unfinished", "missing", "unreadable marker")


def planned_runs(experiment: dict) -> list[str]:
    """Names of the runs of every call in ``experiment.json``'s history, in first-planned order."""
    names: dict[str, None] = {}
    for call in experiment.get("history", []):
        grid, identity = call["grid"], call["identity"]
        shared = identity.get("pretraining_seeds") == "shared" or bool(identity.get("given_pretrained_weights"))
        for run in run_grid(tuple(grid["methods"]), tuple(grid["adaptations"]), tuple(grid["seeds"]),
                            tuple(parse_k(k) for k in grid["ks"]), shared, identity,
                            identity.get("unlabelled_count")):
            names.setdefault(run.name)
    return list(names)


def marker_problem(path: str) -> str | None:
    """Why the marker at ``path`` cannot be read (None when it can)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return None if isinstance(data, dict) else f"holds a {type(data).__name__}, not a record"


def last_log_line(folder: str) -> str:
    """The last non-empty line of the run's newest log (prediction, else fine-tuning), or why there is none."""
    logs = [join(folder, name) for name in LOGS if isfile(join(folder, name))]
    if not logs:
        return "no log"
    newest = max(logs, key=os.path.getmtime)
    with open(newest, errors="replace") as f:
        lines = [line.strip() for line in f.read().replace("\r", "\n").splitlines() if line.strip()]
    return f"{os.path.basename(newest)}: {lines[-1] if lines else '(empty)'}"


def run_state(layout: ExperimentLayout, name: str) -> dict:
    """``{run, state, detail}`` of one run folder name."""
    folder = join(layout.root, "runs", name)
    if isfile(join(folder, FINISHED_FILE)):
        problem = marker_problem(join(folder, FINISHED_FILE))
        if problem:
            return dict(run=name, state="unreadable marker", detail=f"{join(folder, FINISHED_FILE)}: {problem}")
        return dict(run=name, state="finished", detail="")
    if isdir(folder):
        return dict(run=name, state="failed or unfinished", detail=last_log_line(folder))
    return dict(run=name, state="missing", detail="not started")


def run_states(layout: ExperimentLayout) -> list[dict]:
    """The state of every planned run, then of any other run folder found (e.g. from an older call)."""
    with open(layout.experiment_file) as f:
        names = planned_runs(json.load(f))
    runs = join(layout.root, "runs")
    found = sorted(n for n in os.listdir(runs) if INTERRUPTED not in n) if isdir(runs) else []
    return [run_state(layout, n) for n in names + [n for n in found if n not in names]]


def runs_markdown(states: list[dict]) -> list[str]:
    """Markdown lines: the counts per state, and every run that is not finished with its detail."""
    counts = {state: sum(s["state"] == state for s in states) for state in STATES}
    lines = ["", f"Runs planned: {len(states)} ({', '.join(f'{n} {state}' for state, n in counts.items() if n)})."]
    lines += [f"- {s['run']}: {s['state']}" + (f" ({s['detail']})" if s["detail"] else "")
              for s in states if s["state"] != "finished"]
    return lines


def compared_settings_ids(records: list[dict]) -> list[str]:
    """The settings set each finished run is compared under: its own (``settings_id``), except for a run that
    pre-trains nothing (the baseline) whose set no pre-trained run shares: it joins the one set of the pre-trained
    runs that agree with it on every setting it uses. So baseline runs reused between experiments that differ only
    in pre-training settings (the N sweep: ``--unlabelled-count``) are not reported as mixed."""
    pretrained = [r for r in records if "settings_id" in r and pretraining_strategy(r["method"]) is not None]
    shared = {r["settings_id"] for r in pretrained}
    ids = []
    for record in records:
        own = record.get("settings_id", "?")
        if "settings_id" in record and pretraining_strategy(record["method"]) is None and own not in shared:
            used = run_settings(record["settings"], pretrained=False)
            agreeing = {r["settings_id"] for r in pretrained if run_settings(r["settings"], pretrained=False) == used}
            own = agreeing.pop() if len(agreeing) == 1 else own
        ids.append(own)
    return ids


def settings_markdown(records: list[dict]) -> list[str]:
    """Markdown lines listing each settings set behind the finished runs when there are several (``--force-mix``)."""
    sets = {}
    for record, compared in zip(records, compared_settings_ids(records), strict=True):
        if record.get("settings_id") == compared:
            sets.setdefault(compared, record["settings"])
    if len(sets) < 2:
        return []
    keys = sorted({key for s in sets.values() for key in s if len({json.dumps(t.get(key)) for t in sets.values()}) > 1})
    lines = ["", f"MIXED SETTINGS (--force-mix): the finished runs come from {len(sets)} settings sets; rows marked "
                 f"MIXED in the tables pool runs of several:"]
    lines += [f"- {tag}: " + ", ".join(f"{key}={s.get(key)!r}" for key in keys) for tag, s in sets.items()]
    return lines


def subsets_markdown(records: list[dict]) -> list[str]:
    """Markdown lines: per k, how many distinct labelled subsets the seeds' runs cover, when fewer than the seeds (the
    fold has too few training cases for every seed to get its own)."""
    subsets = defaultdict(dict)
    for r in records:
        if r.get("labelled_cases") is not None:
            subsets[r["k"]][r["seed"]] = tuple(r["labelled_cases"])
    lines = [f"- k = {k}: {len(seeds)} seeds cover only {len(set(seeds.values()))} distinct labelled subsets (the "
             f"fold has too few training cases for one per seed)"
             for k, seeds in subsets.items() if len(set(seeds.values())) < len(seeds)]
    return ["", "Labelled subsets:", *lines] if lines else []
