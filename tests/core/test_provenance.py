"""What pretrained_weights.pth records about its origin: the plans fingerprint follows the configuration's data."""
from __future__ import annotations

import copy
import json

import pytest

from nnunet_polycl.provenance import plans_fingerprint


@pytest.fixture
def plans(preprocessed_demo) -> dict:
    return json.loads((preprocessed_demo / "nnUNetPlans.json").read_text())


def test_fingerprint_is_that_of_the_configuration_and_its_data(plans):
    base = plans_fingerprint(plans, "2d")
    assert len(base) == 64 and base == plans_fingerprint(copy.deepcopy(plans), "2d")
    unrelated = copy.deepcopy(plans)
    unrelated["configurations"]["3d_fullres"]["batch_size"] += 1
    unrelated["experiment_planner_used"] = "anything"
    assert plans_fingerprint(unrelated, "2d") == base  # another configuration, a descriptive entry: unchanged
    for change in (lambda p: p["configurations"]["2d"].update(patch_size=[32, 32]),
                   lambda p: p["configurations"]["2d"]["architecture"]["arch_kwargs"].update(n_stages=3),
                   lambda p: p["foreground_intensity_properties_per_channel"]["0"].update(mean=60.0),
                   lambda p: p.update(transpose_forward=[2, 1, 0])):
        replanned = copy.deepcopy(plans)
        change(replanned)
        assert plans_fingerprint(replanned, "2d") != base


def test_inherited_configurations_are_resolved(plans):
    inherited = copy.deepcopy(plans)
    inherited["configurations"]["2d_big"] = {"inherits_from": "2d", "patch_size": [96, 96]}
    flat = copy.deepcopy(plans)
    flat["configurations"]["2d_big"] = {**plans["configurations"]["2d"], "patch_size": [96, 96]}
    assert plans_fingerprint(inherited, "2d_big") == plans_fingerprint(flat, "2d_big") != plans_fingerprint(plans, "2d")
