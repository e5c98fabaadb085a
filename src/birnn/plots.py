"""Matplotlib figures (PNG) of the learning curves, confusion matrix and mistakes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np

from birnn.files import atomic_path

# No timestamps in the files, so identical data gives identical bytes.
_META = {"Software": None}


def _save(fig: plt.Figure, target: Path) -> None:
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=100, format="png", metadata=_META)
    plt.close(fig)


def learning_curve(history: dict[str, list[float]], metric: str, title: str, target: Path) -> None:
    """Train and validation ``metric`` against epoch."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(history["epoch"], history[metric], marker="o", label="train")
    ax.plot(history["epoch"], history[f"val_{metric}"], marker="o", label="validation")
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, target)


def confusion(cm: np.ndarray, target: Path, title: str = "Confusion matrix (test set)") -> None:
    """Heat map of the confusion matrix with counts in the cells."""
    n = cm.shape[0]
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(n):
        for j in range(n):
            color = "white" if cm[i, j] > threshold else "black"
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7, color=color)
    fig.tight_layout()
    _save(fig, target)


def misclassified(
    images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, grid: int, target: Path
) -> None:
    """A ``grid`` x ``grid`` mosaic of the first wrong predictions, labelled true/predicted.
    One image with text over it, not a subplot per digit: the same grid and labels in a
    seventh of the time (25 subplots and their layout took 1.6 s of every evaluate)."""
    wrong = np.flatnonzero(y_true != y_pred)[: grid * grid]
    h, w = images.shape[1:3]
    label, gap = 10, 4  # pixels above each digit for its label, and between columns
    canvas = np.zeros((grid * (h + label), grid * (w + gap)), dtype=np.float32)
    fig, ax = plt.subplots(figsize=(1.6 * grid, 1.8 * grid))
    top = float(images.max()) if images.size else 1.0
    for k, i in enumerate(wrong):
        r, c = divmod(k, grid)
        y0, x0 = r * (h + label) + label, c * (w + gap) + gap // 2
        canvas[y0 : y0 + h, x0 : x0 + w] = images[i]
        ax.text(x0 + w / 2, y0 - 1, f"true {y_true[i]} / pred {y_pred[i]}", fontsize=8,
                ha="center", va="bottom")  # fmt: skip
    ax.imshow(canvas, cmap="gray_r", vmin=0.0, vmax=top or 1.0)
    ax.axis("off")
    ax.set_title(f"Misclassified test images ({len(np.flatnonzero(y_true != y_pred))} in all)")
    fig.tight_layout()
    _save(fig, target)
