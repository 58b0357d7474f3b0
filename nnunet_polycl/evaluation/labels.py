"""Which labels (or regions) of a dataset.json to evaluate, by name, through nnU-Net's LabelManager."""
from __future__ import annotations

from typing import Sequence, Union

from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunet_polycl.paths import PolyCLUserError

LabelOrRegion = Union[int, tuple[int, ...]]


def label_manager(dataset_json: dict, source: str = "dataset.json") -> LabelManager:
    """nnU-Net's LabelManager for ``dataset_json`` (as ``PlansManager.get_label_manager`` builds it)."""
    if "labels" not in dataset_json:
        raise PolyCLUserError(f"{source} has no 'labels' entry; it is not an nnU-Net v2 dataset.json.")
    try:
        return LabelManager(dataset_json["labels"], dataset_json.get("regions_class_order"))
    except (AssertionError, RuntimeError) as e:
        raise PolyCLUserError(f"The labels in {source} are not valid for nnU-Net: {e}") from None


def _as_label_or_region(value) -> LabelOrRegion:
    if isinstance(value, (list, tuple)):
        return int(value[0]) if len(value) == 1 else tuple(int(v) for v in value)
    return int(value)


def foreground_labels(dataset_json: dict, source: str = "dataset.json") -> dict[str, LabelOrRegion]:
    """``{name: label or region}`` of every foreground label (or region) nnU-Net evaluates, in dataset.json order."""
    manager = label_manager(dataset_json, source)
    evaluated = manager.foreground_regions if manager.has_regions else manager.foreground_labels
    evaluated = [_as_label_or_region(v) for v in evaluated]
    named = {name: _as_label_or_region(v) for name, v in dataset_json["labels"].items() if name != "ignore"}
    return {name: value for name, value in named.items() if value in evaluated}


def select_labels(dataset_json: dict, requested: Sequence[Union[str, int]] | None = None,
                  source: str = "dataset.json") -> dict[str, LabelOrRegion]:
    """The labels to evaluate: all foreground labels, or those ``requested`` by name or integer value.

    Raises:
        PolyCLUserError: a requested label is not a foreground label (or region) of ``dataset_json``.
    """
    available = foreground_labels(dataset_json, source)
    if not requested:
        return available
    by_value = {str(v): name for name, v in available.items() if isinstance(v, int)}
    selected: dict[str, LabelOrRegion] = {}
    for item in requested:
        name = str(item) if str(item) in available else by_value.get(str(item))
        if name is None:
            listing = ", ".join(f"{n}={v}" for n, v in available.items())
            raise PolyCLUserError(f"Label {item!r} is not a foreground label of {source} (its labels: {listing}). "
                                  f"Pass --labels with names or values from this list.")
        selected[name] = available[name]
    return selected
