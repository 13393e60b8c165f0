"""Figures of the data stage: clean image, noisy images, target mask (the paper's Fig. 1 a-c)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from hrtem3d.labels.scheme import ClassScheme
from hrtem3d.viz.colors import class_colors, render_classes


def training_sample_figure(clean: np.ndarray, noisy: list[np.ndarray], doses: list[float], cls: np.ndarray,
                           alpha: np.ndarray, scheme: ClassScheme, sampling_A: float,
                           title: str = "") -> Figure:
    """Clean image, one noisy image per dose, and the target mask side by side.

    Args:
        clean: noiseless intensity `[y, x]` (vacuum 1).
        noisy: noisy counts per dose. doses: e/Å².
        cls, alpha: target class map and softness.
        sampling_A: pixel size (Å) for the scale bar.
    """
    n = 2 + len(noisy)
    fig = Figure(figsize=(3.2 * n, 3.6), layout="constrained")
    axes = fig.subplots(1, n)
    axes[0].imshow(clean, cmap="gray")
    axes[0].set_title("(a) clean image")
    for ax, img, dose in zip(axes[1:], noisy, doses):
        ax.imshow(img, cmap="gray")
        ax.set_title(f"noisy, {dose:g} e/Å²")
    axes[1].set_title(f"(b) {axes[1].get_title()}")
    axes[-1].imshow(render_classes(cls, scheme, alpha))
    axes[-1].set_title("(c) target: class = atoms in column")
    colors = class_colors(scheme)
    for name in scheme.species:
        present = sorted({int(c) for c in np.unique(cls) if c in set(scheme.species_classes(name))})
        for c in present[:: max(1, len(present) // 4)]:
            axes[-1].plot([], [], "s", color=colors[c], label=f"{name} {c - scheme.offset(name)}")
    axes[-1].legend(loc="lower right", fontsize=6, ncols=2, framealpha=0.6)
    return _finish(fig, axes, clean.shape, sampling_A, title)


def _finish(fig: Figure, axes, shape: tuple[int, int], sampling_A: float, title: str) -> Figure:
    """Hide the axes, add a 1 nm scale bar to every panel and the title."""
    for ax in axes:
        ax.set_axis_off()
        _scale_bar(ax, shape, sampling_A)
    if title:
        fig.suptitle(title)
    return fig


def _scale_bar(ax, shape: tuple[int, int], sampling_A: float, length_A: float = 10.0) -> None:
    n = length_A / sampling_A
    y = shape[0] * 0.94
    ax.plot([shape[1] * 0.05, shape[1] * 0.05 + n], [y, y], color="white", lw=3)
    ax.text(shape[1] * 0.05 + n / 2, y - shape[0] * 0.03, f"{length_A:g} Å", color="white",
            ha="center", fontsize=7)


def network_figure(clean: np.ndarray, noisy: np.ndarray, cls: np.ndarray, alpha: np.ndarray, pred: np.ndarray,
                   confidence: np.ndarray, scheme: ClassScheme, sampling_A: float, dose: float,
                   title: str = "") -> Figure:
    """The paper's Figure 1: clean image, noisy input, target, network output, confidence map."""
    fig = Figure(figsize=(16, 3.7), layout="constrained")
    axes = fig.subplots(1, 5)
    axes[0].imshow(clean, cmap="gray")
    axes[0].set_title("(a) clean image")
    axes[1].imshow(noisy, cmap="gray")
    axes[1].set_title(f"(b) noisy input, {dose:g} e/Å²")
    axes[2].imshow(render_classes(cls, scheme, alpha))
    axes[2].set_title("(c) target")
    axes[3].imshow(render_classes(pred, scheme))
    axes[3].set_title("(d) network output")
    im = axes[4].imshow(np.where(pred > 0, confidence, 0.0), cmap="magma", vmin=0, vmax=1)
    axes[4].set_title("(e) confidence")
    fig.colorbar(im, ax=axes[4], shrink=0.8)
    return _finish(fig, axes, clean.shape, sampling_A, title)
