"""Overlay of detected columns on the input image, coloured by depth."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def overlay_figure(image: np.ndarray, columns: pd.DataFrame, pixel_size_A: float, title: str = "",
                   max_atoms: int = 12) -> Figure:
    """The image in grey, Ce columns as filled circles and O as small squares, colour = atoms in column."""
    fig = Figure(figsize=(7, 6.2), layout="constrained")
    ax = fig.subplots()
    lo, hi = np.percentile(image, [0.5, 99.5])
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
    sc = None
    for sp, marker, size in (("Ce", "o", 28), ("O", "s", 9)):
        c = columns[columns.species == sp]
        if len(c):
            sc = ax.scatter(c.x_px, c.y_px, c=c.n_atoms, cmap="viridis", vmin=1, vmax=max_atoms, marker=marker,
                            s=size, edgecolors="none", alpha=0.85, label=sp)
    if sc is not None:
        fig.colorbar(sc, ax=ax, shrink=0.8, label="atoms in column")
        ax.legend(loc="upper right", fontsize=8)
    n = 10 / pixel_size_A
    ny, nx = image.shape
    ax.plot([nx * 0.05, nx * 0.05 + n], [ny * 0.95, ny * 0.95], color="white", lw=3)
    ax.text(nx * 0.05 + n / 2, ny * 0.92, "1 nm", color="white", ha="center", fontsize=8)
    ax.set_axis_off()
    ax.set_title(title or f"{len(columns)} columns")
    return fig
