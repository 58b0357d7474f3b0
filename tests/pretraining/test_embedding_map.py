"""The probe's embedding map on synthetic embeddings: PCA, statuses, the seeded subsample, the cost at 10^4 slices."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from nnunet_polycl.pretraining.embedding_map import (
    EMBEDDINGS_DATA,
    MAX_POINTS,
    embedding_map,
    pca_2d,
    write_embedding_map,
)
from nnunet_polycl.slice_index import SliceIndex


def _index(n: int, scans: int, seed: int = 0) -> SliceIndex:
    rng = np.random.default_rng(seed)
    organ = rng.random(n) < 0.4
    known = rng.random(n) < 0.9
    return SliceIndex(tuple(f"case_{i:03d}" for i in range(scans)), rng.integers(0, scans, n), np.arange(n) % 40,
                      organ & known, known)


def test_pca_2d_equals_the_first_two_principal_components_of_an_svd():
    x = np.random.default_rng(1).normal(size=(300, 16)) * np.linspace(5, 0.5, 16)
    centred = x - x.mean(0)
    expected = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    np.testing.assert_allclose(np.abs(pca_2d(x)), np.abs(expected), atol=1e-8)
    np.testing.assert_array_equal(pca_2d(x), pca_2d(x.copy()))  # signs fixed: the same map every time


def test_organ_status_separates_along_the_first_component_when_the_embeddings_encode_it():
    index = _index(500, 6)
    rng = np.random.default_rng(2)
    z = rng.normal(size=(500, 32)) * 0.1
    z[:, 0] += np.where(index.organ, 3.0, -3.0)
    panel = embedding_map(index, [("learnt", z, 0.9)])["panels"][0]
    x, status = np.array(panel["x"]), np.array(panel["status"])
    organ_side = np.sign(x[status == "organ"].mean())
    assert (np.sign(x[status == "organ"]) == organ_side).all() and (np.sign(x[status != "organ"]) == -organ_side).all()


def test_both_panels_plot_the_same_slices_with_their_status_and_scan():
    index = _index(200, 5)
    panels = [("pre-trained", np.random.default_rng(3).normal(size=(200, 8)), 0.8),
              ("random", np.random.default_rng(4).normal(size=(200, 8)), 0.5)]
    data = embedding_map(index, panels)
    assert data["slices"] == data["plotted"] == 200 and not data["subsampled"]
    expected_status = ["unknown" if not k else "organ" if o else "no organ"
                       for o, k in zip(index.organ, index.organ_known, strict=True)]
    for panel, (title, _, accuracy) in zip(data["panels"], panels, strict=True):
        assert panel["encoder"] == title and panel["accuracy"] == accuracy
        assert len(panel["x"]) == len(panel["y"]) == 200
        assert panel["status"] == expected_status
        assert panel["scan"] == [index.case_ids[s] for s in index.scan]


def test_above_the_limit_a_seeded_subset_is_drawn_and_ten_thousand_slices_take_under_ten_seconds(tmp_path):
    n = MAX_POINTS + 2_000
    index = _index(n, 60)
    rng = np.random.default_rng(5)
    panels = [("pre-trained", rng.normal(size=(n, 256)).astype(np.float32), 0.7),
              ("random", rng.normal(size=(n, 256)).astype(np.float32), 0.5)]
    start = time.perf_counter()
    path = write_embedding_map(str(tmp_path), index, panels, "synthetic")
    seconds = time.perf_counter() - start
    data = json.loads((tmp_path / EMBEDDINGS_DATA).read_text())
    assert data["slices"] == n and data["plotted"] == MAX_POINTS and data["subsampled"]
    assert data["panels"][0]["scan"] == data["panels"][1]["scan"]  # the same slices in both panels
    assert embedding_map(index, panels[:1])["panels"][0]["scan"] == data["panels"][0]["scan"]  # seeded
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert seconds < 10, f"{seconds:.1f} s for {n} slices"


@pytest.mark.parametrize("dims", [1, 2])
def test_embeddings_with_fewer_than_two_dimensions_still_give_two_coordinates(dims):
    assert pca_2d(np.random.default_rng(6).normal(size=(10, dims))).shape == (10, 2)
