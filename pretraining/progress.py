"""What a pre-training run shows and leaves behind about its progress: log lines, metric history, ``progress.png``.

Like nnU-Net's trainer: timestamped lines to the console and to a log file next to the outputs, one value per metric
per epoch kept in the checkpoint (so curves survive ``--c``), and a plot redrawn every epoch.
"""
from __future__ import annotations

import os
from datetime import datetime

from nnunet_polycl.checkpoint import atomic_write

# Per epoch: mean loss, mean cos(z, z+) and cos(z, z-), share of triplets with cos+ > cos-, slices through the model
# per second (data loading included), wall time, and the learning rate of the epoch's last step.
METRICS = ("loss", "cos_pos", "cos_neg", "accuracy", "slices_per_s", "epoch_time_s", "lr")
LOG_FILE = "training_log.txt"
PLOT_FILE = "progress.png"


class RunLog:
    """Timestamped lines to stdout and to ``<folder>/training_log.txt`` (appended, so a continued run adds to it)."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, LOG_FILE)

    def __call__(self, *parts: object) -> None:
        line = f"{datetime.now():%Y-%m-%d %H:%M:%S.%f}: {' '.join(str(p) for p in parts)}"
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


def empty_history() -> dict[str, list[float]]:
    """One list per metric, one value per finished epoch."""
    return {m: [] for m in METRICS}


def epoch_line(epoch: int, epochs: int, metrics: dict[str, float]) -> str:
    """The log line of one finished epoch (1-based ``epoch``)."""
    return (f"Epoch {epoch}/{epochs}: loss {metrics['loss']:.4f}, cos+ {metrics['cos_pos']:.4f}, "
            f"cos- {metrics['cos_neg']:.4f}, triplet accuracy {metrics['accuracy']:.4f}, "
            f"{metrics['slices_per_s']:.1f} slices/s, {metrics['epoch_time_s']:.1f} s, lr {metrics['lr']:.3g}")


def plot_progress(history: dict[str, list[float]], path: str, title: str) -> None:
    """Draw loss, mean cos+ / cos- and triplet accuracy against the epoch into ``path`` (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = list(range(1, len(history["loss"]) + 1))
    fig, axes = plt.subplots(3, 1, figsize=(8, 10), sharex=True)
    axes[0].plot(epochs, history["loss"], color="b", marker=".", label="loss")
    axes[0].set_ylabel("loss")
    axes[1].plot(epochs, history["cos_pos"], color="g", marker=".", label="mean cos(z, z+)")
    axes[1].plot(epochs, history["cos_neg"], color="r", marker=".", label="mean cos(z, z-)")
    axes[1].set_ylabel("cosine similarity")
    axes[2].plot(epochs, history["accuracy"], color="k", marker=".", label="share with cos+ > cos-")
    axes[2].set_ylabel("triplet accuracy")
    axes[2].set_ylim(-0.02, 1.02)
    axes[2].set_xlabel("epoch")
    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:
        ax.legend(loc="best")
        ax.grid(alpha=0.3)
    axes[0].set_title(title)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    finally:
        plt.close(fig)
