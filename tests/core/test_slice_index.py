"""The slice index of nnU-Net-preprocessed data: per-slice organ status on the real CT, labels, unannotated slices."""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

from nnunet_polycl.network import load_plans_context
from nnunet_polycl.paths import PolyCLUserError
from nnunet_polycl.sampling import make_sampler
from nnunet_polycl.slice_index import SliceIndex, build_slice_index, middle_slices, resolve_labels

LIVER_DATASET_JSON = {"labels": {"background": 0, "liver": 1}}


def _mask_slice_status(raw_label_file, properties: dict, transpose_forward) -> np.ndarray:
    """Organ status per slice from the raw mask, cropped and transposed the way nnU-Net's preprocessing does."""
    import SimpleITK as sitk

    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(raw_label_file))).transpose(transpose_forward)
    crop = tuple(slice(lo, hi) for lo, hi in properties["bbox_used_for_cropping"])
    return (mask[crop] > 0).reshape(mask[crop].shape[0], -1).any(axis=1)


@pytest.fixture
def real_ct_ctx(preprocessed_real_ct, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed_real_ct.parent))
    return load_plans_context(preprocessed_real_ct.name)


@pytest.mark.real_ct
def test_organ_status_of_every_slice_matches_the_real_liver_mask(real_ct_ctx, preprocessed_real_ct):
    ctx = real_ct_ctx
    index = build_slice_index(ctx, ["ct_001", "ct_000"])
    assert index.case_ids == ("ct_000", "ct_001")
    raw_labels = preprocessed_real_ct.parents[1] / "raw" / preprocessed_real_ct.name / "labelsTr"
    for scan, case in enumerate(index.case_ids):
        properties = pickle.loads((preprocessed_real_ct / "nnUNetPlans_2d" / f"{case}.pkl").read_bytes())
        expected = _mask_slice_status(raw_labels / f"{case}.nii.gz", properties, ctx.plans["transpose_forward"])
        rows = index.scan == scan
        assert properties["shape_after_cropping_and_before_resampling"][0] == rows.sum()  # 3 mm: no resampling
        assert np.array_equal(index.z[rows], np.arange(rows.sum()))
        assert np.array_equal(index.organ[rows], expected), case
    full = index.scan == 0
    assert (full.sum(), index.organ[full].sum()) == (112, 43)  # the example's documented counts
    assert index.organ.any() and not index.organ.all() and index.organ_known.all()


@pytest.mark.real_ct
def test_middle_fraction_and_explicit_label_select_the_same_slices(real_ct_ctx):
    full = build_slice_index(real_ct_ctx, ["ct_000"])
    middle = build_slice_index(real_ct_ctx, ["ct_000"], labels=resolve_labels(real_ct_ctx.dataset_json, ["liver"]),
                               slice_fraction=0.3)
    assert middle_slices(112, 0.3) == (39, 73)  # 34 slices = round(0.3 * 112), centred
    assert np.array_equal(middle.z, np.arange(39, 73))
    assert np.array_equal(middle.organ, full.organ[39:73])
    tiny = build_slice_index(real_ct_ctx, ["ct_000", "ct_001"], slice_fraction=1e-6)
    assert tiny.z.tolist() == [55, 34]  # at least one slice per scan: the middle one


@pytest.mark.real_ct
def test_unannotated_slices_have_unknown_status_and_only_strategy_s_accepts_them(preprocessed_real_ct, tmp_path,
                                                                                 monkeypatch):
    import json

    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    folder = tmp_path / preprocessed_real_ct.name
    shutil.copytree(preprocessed_real_ct, folder)
    dataset_json = json.loads((folder / "dataset.json").read_text())
    dataset_json["labels"]["ignore"] = 2  # nnU-Net's marker of unannotated voxels
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    data = folder / "nnUNetPlans_2d"
    _, seg, _, _ = nnUNetDatasetBlosc2(str(data), ["ct_001"]).load_case("ct_001")
    seg = np.asarray(seg[:])
    seg[:, :10][seg[:, :10] == 0] = 2  # slices 0-9 of ct_001: nothing annotated except possibly organ
    seg[:, 60:][seg[:, 60:] == 0] = 2  # slices 60-69: liver annotated, rest unannotated
    nnUNetDatasetBlosc2.save_seg(seg, str(data / "ct_001_seg"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    ctx = load_plans_context(folder.name)

    index = build_slice_index(ctx, ["ct_000", "ct_001"])
    rows = index.scan == 1
    assert not index.organ_known[rows][:10].any()  # no liver there (raw slices 30-39), status unknown
    assert index.organ[rows][60:].all() and index.organ_known[rows][60:].all()  # liver seen: status known
    assert index.organ_known[rows][10:60].all() and index.organ_known[index.scan == 0].all()
    assert index.unknown_cases() == ["ct_001"]
    assert resolve_labels(ctx.dataset_json, None) == (1,)  # any foreground excludes the ignore label
    for strategy in ("O", "M"):
        with pytest.raises(PolyCLUserError, match=r"10 slices of cases \['ct_001'\] are unannotated.*strategy S"):
            make_sampler(strategy, index)
    assert make_sampler("S", index).triplets(0).shape == (len(index), 3)


def test_resolve_labels_names_values_regions_and_errors():
    assert resolve_labels(LIVER_DATASET_JSON, None) is None
    assert resolve_labels(LIVER_DATASET_JSON, ["liver"]) == (1,)
    assert resolve_labels(LIVER_DATASET_JSON, [1]) == resolve_labels(LIVER_DATASET_JSON, ["1"]) == (1,)
    regions = {"labels": {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing": 3},
               "regions_class_order": [1, 2, 3]}
    assert resolve_labels(regions, ["tumor_core"]) == (2, 3)
    assert resolve_labels(regions, ["enhancing", 1]) == (1, 3)
    with pytest.raises(PolyCLUserError, match=r"Unknown target label 'spleen'.*liver=1.*values \[1\]"):
        resolve_labels(LIVER_DATASET_JSON, ["spleen"])
    for not_a_target in ("background", 0, 2):
        with pytest.raises(PolyCLUserError, match="Unknown target label"):
            resolve_labels(LIVER_DATASET_JSON, [not_a_target])


def test_slice_index_validates_its_arrays():
    index = SliceIndex(("a", "b"), [0, 0, 1], [0, 1, 0], [True, False, True])
    assert len(index) == 3 and index.organ_known.all() and index.scan.dtype == np.int32
    assert index.subset(index.organ).z.tolist() == [0, 0]
    with pytest.raises(ValueError, match=r"SliceIndex.z must have shape \(3,\)"):
        SliceIndex(("a", "b"), [0, 0, 1], [0, 1], [True, False, True])
    with pytest.raises(ValueError, match="must index into case_ids"):
        SliceIndex(("a",), [0, 1], [0, 0], [True, False])


@pytest.mark.real_ct
def test_build_errors(real_ct_ctx):
    with pytest.raises(PolyCLUserError, match=r"Cases \['nope'\] are not in"):
        build_slice_index(real_ct_ctx, ["ct_000", "nope"])
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match=r"slice_fraction must be in \(0, 1\]"):
            build_slice_index(real_ct_ctx, ["ct_000"], slice_fraction=bad)
