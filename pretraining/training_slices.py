"""The slices a pre-training run trains on: the fold's labelled training cases plus, with ``--unlabelled``, the
unlabelled scans (``nnunet_polycl.unlabelled``).

Strategies S and SimCLR use every slice of both. O and M use the unlabelled slices that have an organ status (weak
labels or pseudo-labels) and leave the others out (the log and config.json say how many). Labelled cases keep their
own rule: a labelled slice of unknown status (the dataset's ignore label) is an error for O and M, because a user who
annotated a case with the ignore label should learn that O / M cannot use it rather than have it dropped silently.
"""
from __future__ import annotations

from collections.abc import Sequence

from nnunet_polycl.network import PlansContext
from nnunet_polycl.pretraining.settings import PretrainRequest
from nnunet_polycl.slice_index import SliceIndex, build_slice_index
from nnunet_polycl.unlabelled import UnlabelledData, UnlabelledOptions, UnlabelledPlan, check_options, check_unlabelled


def unlabelled_options(req: PretrainRequest) -> UnlabelledOptions:
    """The request's unlabelled-data options, checked (flag combinations, numbers) before anything is read."""
    from nnunetv2.configuration import default_num_processes

    options = UnlabelledOptions(
        tuple(req.unlabelled or ()), req.organ_slices, req.organ_status_from, req.organ_status_other_dataset,
        req.min_organ_area, default_num_processes if req.num_processes is None else req.num_processes,
        req.unlabelled_count)
    check_options(options, req.strategy)
    return options


def check_unlabelled_request(ctx: PlansContext, options: UnlabelledOptions, train_ids: Sequence[str],
                             val_ids: Sequence[str], label_values: Sequence[int] | None) -> UnlabelledPlan | None:
    """The validated unlabelled scans of the run (reads only), or None without ``--unlabelled``."""
    return check_unlabelled(ctx, options, train_ids, val_ids, label_values) if options.folders else None


def training_slice_index(ctx: PlansContext, train_ids: Sequence[str], label_values: Sequence[int] | None,
                         req: PretrainRequest, plan: UnlabelledPlan | None) -> tuple[SliceIndex, UnlabelledData | None]:
    """The run's slice index (labelled training cases, then unlabelled scans) and the unlabelled scans' data.

    Writes the caches of the unlabelled scans (see ``UnlabelledPlan.materialise``).
    """
    index = build_slice_index(ctx, train_ids, label_values, req.slice_fraction)
    if plan is None:
        return index, None
    data = plan.materialise(req.device, req.slice_fraction)
    return SliceIndex.concatenate([index, data.for_strategy(req.strategy)[0]]), data
