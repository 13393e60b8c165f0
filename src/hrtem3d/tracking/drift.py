"""Specimen drift between movie frames, from phase correlation of whole frames."""

from __future__ import annotations

import numpy as np
from skimage.filters import window
from skimage.registration import phase_cross_correlation


def frame_shift(reference: np.ndarray, image: np.ndarray, upsample: int = 20) -> tuple[float, float]:
    """Shift (dx, dy) in pixels of `image` relative to `reference`: image(r) ≈ reference(r - shift).

    Both images are Hann-windowed so the frame edges do not dominate; a particle in
    vacuum registers on its outline and lattice together. The lattice alone repeats
    every few Å, so shifts of a lattice period are ambiguous when a crystal fills the
    whole frame; drift within a movie is far smaller than the field of view, and frames
    are compared with one fixed reference.

    Args:
        reference, image: 2D arrays of one shape (any intensity scale).
        upsample: sub-pixel precision 1/upsample pixel.

    Returns:
        (dx, dy) in pixels of these images.
    """
    if reference.shape != image.shape:
        raise ValueError(f"frames differ in shape: {reference.shape} vs {image.shape}")
    w = window("hann", reference.shape)
    ref = (reference - reference.mean()) * w
    img = (image - image.mean()) * w
    shift, _, _ = phase_cross_correlation(ref, img, upsample_factor=upsample, normalization="phase")
    # skimage returns the shift that registers `image` onto `reference`, i.e. minus the drift
    return -float(shift[1]), -float(shift[0])
