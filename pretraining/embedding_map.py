"""What pre-training learnt, as a picture: a 2D PCA map of the projection-head embeddings of the probe's slices.

Two panels side by side, the pre-trained encoder and a random encoder of the same architecture (the probe's first,
seed 0), each coloured by organ status (organ / no organ / unknown) and marked by scan, with its triplet accuracy in
the title. An encoder that learnt the organ separates the colours; one that only tells scans apart groups the
markers. Above ``MAX_POINTS`` slices a seeded random subset is drawn (the same slices in both panels), so the map
stays cheap enough to draw on every probe. The plotted data is saved next to the picture (``embeddings.json``).
"""
from __future__ import annotations

from os.path import join

import numpy as np
from matplotlib.figure import Figure

from nnunet_polycl.checkpoint import atomic_write, atomic_write_json
from nnunet_polycl.slice_index import SliceIndex

EMBEDDINGS_FIGURE = "embeddings.png"
EMBEDDINGS_DATA = "embeddings.json"
MAX_POINTS = 10_000
STATUS_COLOURS = {"organ": "tab:red", "no organ": "tab:blue", "unknown": "tab:gray"}
SCAN_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "h", "p")


def pca_2d(z: np.ndarray) -> np.ndarray:
    """The first two principal components ``[N, 2]`` of the rows of ``z`` (centred; from the eigenvectors of the
    D x D covariance, cheap for N >> D; signs fixed so that each component's largest loading is positive, which makes
    the map deterministic)."""
    centred = np.asarray(z, dtype=np.float64)
    centred = centred - centred.mean(0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    components = vectors[:, ::-1][:, :2].T
    components = components * np.sign(components[np.arange(len(components)), np.abs(components).argmax(1)])[:, None]
    coords = centred @ components.T
    return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))  # fewer than 2 dimensions: zeros


def slice_statuses(index: SliceIndex) -> list[str]:
    """Per slice: ``organ``, ``no organ`` or ``unknown`` (no known organ status)."""
    return ["unknown" if not known else "organ" if organ else "no organ"
            for organ, known in zip(index.organ.tolist(), index.organ_known.tolist(), strict=True)]


def embedding_map(index: SliceIndex, panels: list[tuple[str, np.ndarray, float]], max_points: int = MAX_POINTS,
                  seed: int = 0) -> dict:
    """The plotted data: per panel ``(title, embeddings [N, D], triplet accuracy)`` its 2D PCA coordinates, with each
    point's organ status and scan, over the same (at most ``max_points``, seeded) slices of ``index``."""
    rows = np.arange(len(index))
    if len(rows) > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_points, replace=False))
    statuses = slice_statuses(index)
    status = [statuses[r] for r in rows.tolist()]
    scan = [index.case_ids[s] for s in index.scan[rows].tolist()]
    out = []
    for title, z, accuracy in panels:
        xy = pca_2d(np.asarray(z)[rows])
        out.append({"encoder": title, "accuracy": accuracy, "x": np.round(xy[:, 0], 5).tolist(),
                    "y": np.round(xy[:, 1], 5).tolist(), "status": status, "scan": scan})
    return {"slices": len(index), "plotted": len(rows), "subsampled": len(rows) < len(index), "seed": seed,
            "panels": out}


def draw_embedding_map(data: dict, path: str, title: str) -> None:
    """Draw the panels of :func:`embedding_map` side by side into ``path`` (PNG, written atomically)."""
    panels = data["panels"]
    fig = Figure(figsize=(5.2 * len(panels), 5.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        x, y = np.asarray(panel["x"]), np.asarray(panel["y"])
        scans = sorted(set(panel["scan"]))
        marker_of = {s: SCAN_MARKERS[i % len(SCAN_MARKERS)] for i, s in enumerate(scans)}
        markers = np.array([marker_of[s] for s in panel["scan"]])
        colours = np.array([STATUS_COLOURS[s] for s in panel["status"]])
        for marker in dict.fromkeys(markers.tolist()):
            on = markers == marker
            ax.scatter(x[on], y[on], c=colours[on], marker=marker, s=14, alpha=0.7, linewidths=0)
        ax.set_title(f"{panel['encoder']}\ntriplet accuracy {panel['accuracy']:.3f}", fontsize=10)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.grid(alpha=0.3)
    present = [s for s in STATUS_COLOURS if s in panels[0]["status"]]
    handles = [axes[0].scatter([], [], c=STATUS_COLOURS[s], marker="o", label=s) for s in present]
    scans = sorted(set(panels[0]["scan"]))
    if len(scans) <= len(SCAN_MARKERS):  # more scans than markers: the markers repeat, a legend would mislead
        handles += [axes[0].scatter([], [], c="k", marker=m, label=s) for s, m in zip(scans, SCAN_MARKERS[:len(scans)], strict=True)]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    note = f", {data['plotted']} of {data['slices']} slices drawn" if data["subsampled"] else ""
    fig.suptitle(f"{title}: PCA of the projection-head embeddings ({data['slices']} slices{note}; colour: organ "
                 f"status, marker: scan)", fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.82, top=0.82, bottom=0.11, wspace=0.3)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=72))


def write_embedding_map(folder: str, index: SliceIndex, panels: list[tuple[str, np.ndarray, float]],
                        title: str, seed: int = 0) -> str:
    """Write ``embeddings.png`` and its data ``embeddings.json`` into ``folder``; returns the picture's path."""
    data = embedding_map(index, panels, seed=seed)
    atomic_write_json(data, join(folder, EMBEDDINGS_DATA))
    path = join(folder, EMBEDDINGS_FIGURE)
    draw_embedding_map(data, path, title)
    return path
