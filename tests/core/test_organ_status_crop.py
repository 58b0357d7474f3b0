"""Organ status from the pixels the encoder sees: a scan larger than the patch with the organ at its border."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

BORDER_NAME, CASE = "Dataset985_PolyCLBorder", "border_000"
SIZE = 100  # in-plane voxels of the scan: larger than the demo plans' 64 x 64 patch


def write_border_scan(raw_image: Path, folder: Path) -> tuple[Path, Path]:
    """A real demo scan padded with air to SIZE x SIZE; the organ only in a band at the top border in slices 2-5 and
    only in the centre in slices 8-11."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(raw_image))
    array = sitk.GetArrayFromImage(image)
    padded = np.full((array.shape[0], SIZE, SIZE), -1000, dtype=array.dtype)
    y0, x0 = (SIZE - array.shape[1]) // 2, (SIZE - array.shape[2]) // 2
    padded[:, y0:y0 + array.shape[1], x0:x0 + array.shape[2]] = array
    label = np.zeros(padded.shape, dtype=np.uint8)
    label[2:6, 0:8, 40:60] = 1
    label[8:12, 45:55, 45:55] = 1
    paths = folder / f"{CASE}_0000.nii.gz", folder / f"{CASE}.nii.gz"
    for values, path in zip((padded, label), paths, strict=True):
        out = sitk.GetImageFromArray(values)
        out.SetSpacing(image.GetSpacing())
        sitk.WriteImage(out, str(path))
    return paths


def test_organ_outside_the_encoder_crop_of_a_large_scan_does_not_count(preprocessed_demo, nnunet_root, tmp_path,
                                                                         monkeypatch):
    from nnunet_polycl.network import load_plans_context
    from nnunet_polycl.pretraining.slice_data import PreprocessedSlices
    from nnunet_polycl.slice_index import build_slice_index
    from nnunet_polycl.unlabelled.pseudo_labels import organ_areas

    target = tmp_path / "preprocessed" / BORDER_NAME
    (target / "nnUNetPlans_2d").mkdir(parents=True)
    shutil.copy(preprocessed_demo / "dataset.json", target / "dataset.json")
    plans = json.loads((preprocessed_demo / "nnUNetPlans.json").read_text())
    (target / "nnUNetPlans.json").write_text(json.dumps({**plans, "dataset_name": BORDER_NAME}))
    raw = nnunet_root / "raw" / preprocessed_demo.name / "imagesTr" / "PolyCLDemo_000_0000.nii.gz"
    image, label = write_border_scan(raw, tmp_path)
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    ctx = load_plans_context(BORDER_NAME)
    preprocessor = ctx.configuration_manager.preprocessor_class(verbose=False)  # nnU-Net's, as for a training case
    preprocessor.run_case_save(str(target / "nnUNetPlans_2d" / CASE), [str(image)], str(label), ctx.plans_manager,
                               ctx.configuration_manager, ctx.dataset_json)

    index = build_slice_index(ctx, [CASE])
    slices = PreprocessedSlices(ctx.data_folder, index.case_ids, ctx.patch_size)
    assert slices._case(0)[0].shape[2] > ctx.patch_size[0] and slices._case(0)[0].shape[3] > ctx.patch_size[1]
    seen = [bool((slices.segmentation(0, int(z)) > 0).any()) for z in index.z]
    assert index.organ.tolist() == seen  # the status is that of the pixels the encoder is given
    whole_slice = (np.asarray(slices._case(0)[1][0]) > 0).reshape(len(index), -1).any(axis=1)
    assert whole_slice[2:6].all() and not index.organ[2:6].any()  # organ only at the border: no organ
    assert index.organ[8:12].all() and index.organ.sum() == 4
    areas = organ_areas(np.asarray(slices._case(0)[1][0]), ctx.patch_size)  # pseudo-labels count the same crop
    assert [z for z, a in enumerate(areas["1"]) if a > 0] == [8, 9, 10, 11]
