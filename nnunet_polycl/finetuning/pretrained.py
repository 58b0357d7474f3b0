"""Find, read, check and load the encoder weights that ``polycl_pretrain`` wrote.

The weights file is ``{'network_weights': <full network state_dict>, 'polycl': {<pre-training settings and
provenance>}}`` at ``nnunet_polycl.paths.default_pretraining_folder(...)/pretrained_weights.pth``. Users whose
pre-training lives elsewhere point :data:`OVERRIDE_VARIABLE` at the file instead.

Weights files are data: the file is read with ``torch.load(weights_only=True)``, which loads tensors and plain values
and refuses anything else without running it; a file that needs more (an older polycl_pretrain wrote numpy values
into it, or it was crafted) is refused unless the user opts in with ``POLYCL_ALLOW_UNSAFE_WEIGHTS_FILE=1`` (recorded;
see ``nnunet_polycl.checkpoint.load_data_only``).

Checks before anything is loaded (each failure is a one-line :class:`PolyCLUserError` naming the file, the mismatch
and the fix): the file is readable as data; it was pre-trained with this run's plans identifier, configuration, fold
and strategy; on this dataset and these plans (fingerprint, see ``nnunet_polycl.provenance``), unless the user opts in
with :data:`ALLOW_FOREIGN_VARIABLE` (recorded); its pre-training used none of the fold's current validation cases
(the split may have changed after pre-training), checked whenever the file records its cases of this dataset, opt-in
or not: no opt-in allows a leak; every encoder tensor fits. Files of older versions without provenance load with a
warning that names what could not be checked.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from os.path import abspath, isfile, join
from typing import Any

import torch
from torch import nn

from nnunet_polycl.checkpoint import UNSAFE_LOAD_VARIABLE, file_sha256, load_data_only
from nnunet_polycl.network import PlansContext, build_plans_network, encoder_of, mismatched_keys
from nnunet_polycl.paths import PRETRAINED_WEIGHTS_FILE, Fold, PolyCLUserError, default_pretraining_folder
from nnunet_polycl.provenance import dataset_fingerprint_sha256, plans_fingerprint
from nnunet_polycl.splits import training_cases

OVERRIDE_VARIABLE = "POLYCL_PRETRAINED_WEIGHTS"
ALLOW_FOREIGN_VARIABLE = "POLYCL_ALLOW_FOREIGN_WEIGHTS"
DEFAULT_SOURCE = "default location"
ENCODER_PREFIX = "encoder."
MAX_LISTED_MISMATCHES = 20


@dataclass(frozen=True)
class PretrainingTarget:
    """What the fine-tuning run needs: the pre-training of this dataset / plans / configuration / fold / strategy,
    made with plans of this fingerprint, on none of the fold's validation cases."""

    dataset_name: str
    plans_identifier: str
    configuration: str
    fold: Fold
    strategy: str
    plans_fingerprint: str | None = None
    validation_cases: tuple[str, ...] = ()
    dataset_fingerprint_sha256: str | None = None  # tells a renamed copy of this dataset from another dataset

    def pretrain_command(self) -> str:
        """The ``polycl_pretrain`` command that writes the weights this run looks for."""
        return (f"polycl_pretrain -d {self.dataset_name} -p {self.plans_identifier} -c {self.configuration} "
                f"-f {self.fold} -s {self.strategy}")


@dataclass(frozen=True)
class PretrainedWeights:
    """A read weights file: where it came from, its checksum, its pre-training settings and its tensors."""

    path: str
    source: str
    sha256: str
    meta: dict[str, Any]
    network_weights: dict[str, torch.Tensor]
    unsafe_load: bool = False  # read with full unpickling after the POLYCL_ALLOW_UNSAFE_WEIGHTS_FILE=1 opt-in

    def record(self) -> dict[str, Any]:
        """What the fine-tuning run records about the file (log, json, checkpoints)."""
        meta = json.loads(json.dumps(self.meta, default=str))  # plain JSON types (an older file's numpy values)
        return {"path": self.path, "source": self.source, "sha256": self.sha256,
                "strategy": meta.get("strategy"), "pretraining_epochs": meta.get("epochs"),
                "unsafe_load_opt_in": f"{UNSAFE_LOAD_VARIABLE}=1" if self.unsafe_load else None, "pretraining": meta}


def fine_tuning_target(ctx: PlansContext, fold: Fold, strategy: str) -> PretrainingTarget:
    """The target of a fine-tuning of ``ctx``'s dataset, plans and configuration on ``fold`` from ``strategy``'s
    weights: the fold's current validation cases (nnU-Net's split file) and the plans' fingerprints."""
    _, val = training_cases(ctx, fold, write_missing=False)
    return PretrainingTarget(ctx.dataset_name, ctx.plans_identifier, ctx.configuration, fold, strategy,
                             plans_fingerprint(ctx.plans, ctx.configuration), tuple(val),
                             dataset_fingerprint_sha256(ctx.preprocessed_folder))


def checked_weights(path: str, source: str, target: PretrainingTarget,
                    ctx: PlansContext) -> tuple[PretrainedWeights, dict[str, Any]]:
    """Read the weights file at ``path`` and run every check against ``target`` and ``ctx``'s network (the foreign
    opt-in read from :data:`ALLOW_FOREIGN_VARIABLE`); returns the file and the record of the provenance checks.

    Raises:
        PolyCLUserError: the first failing check (see the module docstring), one line naming the file.
    """
    weights = read_pretrained_weights(path, source)
    check_pretraining_settings(weights, target)
    checks = check_provenance(weights, target, os.environ.get(ALLOW_FOREIGN_VARIABLE) == "1")
    encoder_weights(weights, build_plans_network(ctx))  # every encoder tensor fits, or a PolyCLUserError
    return weights, checks


def locate_pretrained_weights(target: PretrainingTarget) -> tuple[str, str]:
    """Path of the weights file and how it was found (``$POLYCL_PRETRAINED_WEIGHTS`` or the default location).

    Raises:
        PolyCLUserError: the override names no file, or nothing was pre-trained at the default location.
    """
    override = os.environ.get(OVERRIDE_VARIABLE)
    if override:
        if not isfile(override):
            raise PolyCLUserError(
                f"{OVERRIDE_VARIABLE}={override} does not name an existing file. Point it at a pretrained_weights.pth "
                f"written by polycl_pretrain, or unset it to use the default location "
                f"{join(default_pretraining_folder(target.dataset_name, target.strategy, target.plans_identifier, target.configuration, target.fold), PRETRAINED_WEIGHTS_FILE)}."
            )
        return abspath(override), OVERRIDE_VARIABLE
    folder = default_pretraining_folder(target.dataset_name, target.strategy, target.plans_identifier,
                                        target.configuration, target.fold)
    path = join(folder, PRETRAINED_WEIGHTS_FILE)
    if not isfile(path):
        raise PolyCLUserError(
            f"No PolyCL pre-trained weights found at {path}. This trainer fine-tunes a pre-trained encoder and never "
            f"starts from random weights silently. Pre-train first with: {target.pretrain_command()} , or set "
            f"{OVERRIDE_VARIABLE}=/path/to/pretrained_weights.pth if your pre-training lives elsewhere (use the "
            f"..._Baseline trainer variants for a random initialisation)."
        )
    return path, DEFAULT_SOURCE


def read_pretrained_weights(path: str, source: str = DEFAULT_SOURCE) -> PretrainedWeights:
    """Load a ``pretrained_weights.pth`` on the CPU as data (``weights_only``) and check its structure.

    Raises:
        PolyCLUserError: the file cannot be read, needs Python objects beyond data (and the unsafe opt-in is not set),
            or lacks ``network_weights`` / ``polycl``.
    """
    try:
        content, unsafe = load_data_only(path, "Pre-trained weights file")
    except PolyCLUserError:
        raise
    except Exception as e:  # torch raises many types for truncated / foreign files; all mean "unreadable"
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise PolyCLUserError(
            f"Pre-trained weights file {path} cannot be read ({type(e).__name__}: {first_line}). It is truncated, "
            f"corrupted or not a PyTorch file. Run polycl_pretrain again (it rewrites the file) or point "
            f"{OVERRIDE_VARIABLE} at an intact copy."
        ) from None
    if not isinstance(content, dict) or not isinstance(content.get("network_weights"), dict) \
            or not isinstance(content.get("polycl"), dict):
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise PolyCLUserError(
            f"{path} is not a PolyCL pre-training output: expected a dict with 'network_weights' and 'polycl', found "
            f"{found}. Use the pretrained_weights.pth that polycl_pretrain writes."
        )
    return PretrainedWeights(path, source, file_sha256(path), content["polycl"], content["network_weights"], unsafe)


def check_pretraining_settings(weights: PretrainedWeights, target: PretrainingTarget) -> None:
    """The file must come from a pre-training with this run's plans, configuration, fold and strategy.

    Raises:
        PolyCLUserError: naming each differing setting with both values.
    """
    wanted = {"plans_identifier": target.plans_identifier, "configuration": target.configuration,
              "fold": target.fold, "strategy": target.strategy}
    diffs = [f"{key}: pre-training {weights.meta.get(key)!r}, this fine-tuning {value!r}"
             for key, value in wanted.items() if str(weights.meta.get(key)) != str(value)]
    if diffs:
        raise PolyCLUserError(
            f"The pre-trained weights {weights.path} were made with other settings than this fine-tuning run ("
            + "; ".join(diffs) + f"). Pre-train with the same settings: {target.pretrain_command()} (or pick the "
            f"trainer variant of the file's strategy, e.g. nnUNetTrainerPolyCL_S for strategy S)."
        )


def encoder_weights(weights: PretrainedWeights, network: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder part of the file, after checking every encoder key and shape of ``network`` against it.

    Raises:
        PolyCLUserError: listing the missing keys and differing shapes.
    """
    expected = {ENCODER_PREFIX + k: v for k, v in encoder_of(network).state_dict().items()}
    problems = mismatched_keys(expected, weights.network_weights)
    if problems:
        shown = problems[:MAX_LISTED_MISMATCHES]
        more = f"; ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise PolyCLUserError(
            f"The encoder in {weights.path} does not fit this network ({len(problems)} mismatches: "
            + "; ".join(shown) + more
            + "). The pre-training must use the same dataset plans and configuration as the fine-tuning."
        )
    return {k[len(ENCODER_PREFIX):]: weights.network_weights[k] for k in expected}


def load_pretrained_encoder(network: nn.Module, weights: PretrainedWeights) -> dict[str, Any]:
    """Copy the file's encoder tensors into ``network``'s encoder (DDP / torch.compile unwrapped); decoder untouched.

    Every encoder tensor of the network must be in the file with its shape (else PolyCLUserError, nothing loaded).
    Returns the loading report: ``{encoder_tensors_loaded, encoder_tensors_skipped, file_tensors_not_loaded}``
    (the last: the file's decoder and segmentation-head tensors, which stay freshly initialised).
    """
    tensors = encoder_weights(weights, network)
    encoder_of(network).load_state_dict(tensors, strict=True)
    others = [k for k in weights.network_weights
              if not k.startswith(ENCODER_PREFIX) and not k.startswith("decoder." + ENCODER_PREFIX)]
    return {"encoder_tensors_loaded": len(tensors), "encoder_tensors_skipped": [],
            "file_tensors_not_loaded": len(others)}


def _foreign(weights: PretrainedWeights, target: PretrainingTarget) -> list[str]:
    meta, diffs = weights.meta, []
    if meta.get("dataset_name") not in (None, target.dataset_name):
        diffs.append(f"pre-trained on dataset {meta['dataset_name']}, this run fine-tunes {target.dataset_name}")
    if None not in (meta.get("plans_fingerprint"), target.plans_fingerprint) \
            and meta["plans_fingerprint"] != target.plans_fingerprint:
        diffs.append(f"plans fingerprint {meta['plans_fingerprint'][:12]}… differs from this run's "
                     f"{target.plans_fingerprint[:12]}… (the dataset was planned again, or with other settings)")
    return diffs


def check_provenance(weights: PretrainedWeights, target: PretrainingTarget, allow_foreign: bool) -> dict[str, Any]:
    """Refuse weights of another dataset or plans (unless ``allow_foreign``) and, opt-in or not, weights pre-trained on
    validation cases of the fold; returns the record of what was checked (``unchecked`` lists what an older file
    lacks).

    Raises:
        PolyCLUserError: a one-line message naming the file, the mismatch and the fix.
    """
    meta = weights.meta
    unchecked = [k for k in ("dataset_name", "plans_fingerprint", "pretraining_cases") if meta.get(k) is None]
    foreign = _foreign(weights, target)
    if foreign and not allow_foreign:
        raise PolyCLUserError(
            f"The pre-trained weights {weights.path} come from other data than this fine-tuning run: "
            f"{'; '.join(foreign)}. Pre-train on this dataset and plans ({target.pretrain_command()}), or set "
            f"{ALLOW_FOREIGN_VARIABLE}=1 to fine-tune from them on purpose (the opt-in is recorded).")
    return {"dataset_name": meta.get("dataset_name"), "plans_fingerprint": meta.get("plans_fingerprint"),
            "foreign_opt_in": foreign or None, "validation_cases_checked": check_no_leak(weights, target),
            "unchecked": unchecked}


def _same_dataset(meta: dict[str, Any], target: PretrainingTarget) -> bool:
    """The file's cases are cases of this dataset: same name (or none recorded), or a renamed copy of it (same
    dataset fingerprint)."""
    same_fingerprint = meta.get("dataset_fingerprint_sha256") is not None \
        and meta.get("dataset_fingerprint_sha256") == target.dataset_fingerprint_sha256
    return meta.get("dataset_name") in (None, target.dataset_name) or same_fingerprint


def check_no_leak(weights: PretrainedWeights, target: PretrainingTarget) -> bool:
    """Refuse weights whose pre-training used a case that is a validation case of the fold now; True when the check
    ran (the file records its cases of this dataset, and the fold has held-out cases), whatever the foreign opt-in.

    Raises:
        PolyCLUserError: naming the leaked cases; no opt-in allows them.
    """
    cases = weights.meta.get("pretraining_cases")
    # fold "all" validates on its training cases by definition: there is no held-out set to leak into
    if cases is None or target.fold == "all" or not _same_dataset(weights.meta, target):
        return False
    leaked = sorted(set(cases) & set(target.validation_cases))
    if leaked:
        shown = ", ".join(leaked[:5]) + (f" and {len(leaked) - 5} more" if len(leaked) > 5 else "")
        raise PolyCLUserError(
            f"The pre-trained weights {weights.path} were pre-trained on {len(leaked)} case(s) that are validation "
            f"cases of fold {target.fold} now ({shown}): splits_final.json changed after pre-training, and "
            f"validation would measure scans the encoder has seen (no opt-in allows this, "
            f"{ALLOW_FOREIGN_VARIABLE} included). Pre-train again for this split ({target.pretrain_command()}), or "
            f"restore the splits_final.json the pre-training used.")
    return True


def unchecked_warning(weights: PretrainedWeights, checks: dict[str, Any]) -> str | None:
    """The log warning for a file that lacks provenance fields (written by an older polycl_pretrain), or None."""
    if not checks["unchecked"]:
        return None
    what = {"dataset_name": "the dataset it was pre-trained on", "plans_fingerprint": "the plans it was made with",
            "pretraining_cases": "whether its pre-training saw this fold's validation cases"}
    return (f"WARNING: {weights.path} does not record {', '.join(checks['unchecked'])} (an older polycl_pretrain "
            f"wrote it), so {'; '.join(what[k] for k in checks['unchecked'])} cannot be checked. Pre-train again "
            f"to get a file that can be checked.")
