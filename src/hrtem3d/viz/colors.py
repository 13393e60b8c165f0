"""Colours for class maps: Ce depths on one scale, O depths on another, background black."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

from hrtem3d.labels.scheme import ClassScheme

_SPECIES_CMAPS = ("viridis", "autumn", "cool", "spring")


def class_colors(scheme: ClassScheme) -> np.ndarray:
    """RGB colour `[n_classes, 3]` of each class; class 0 (background) is black."""
    rgb = np.zeros((scheme.n_classes, 3))
    for i, name in enumerate(scheme.species):
        cmap = colormaps[_SPECIES_CMAPS[i % len(_SPECIES_CMAPS)]]
        n = scheme.max_atoms[i]
        for k in range(1, n + 1):
            rgb[scheme.class_of(name, k)] = cmap(0.1 + 0.9 * (k - 1) / max(n - 1, 1))[:3]
    return rgb


def render_classes(cls: np.ndarray, scheme: ClassScheme, alpha: np.ndarray | None = None) -> np.ndarray:
    """RGB image `[ny, nx, 3]` of a class map, optionally faded by `alpha` (0..1)."""
    rgb = class_colors(scheme)[cls]
    if alpha is not None:
        rgb = rgb * np.clip(alpha, 0, 1)[..., None]
    return rgb
