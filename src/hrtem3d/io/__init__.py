"""Microscope-file readers: open an image or a movie lazily, with its pixel size in Å.

>>> from hrtem3d.io import open_image
>>> src = open_image("movie.emd")            # doctest: +SKIP
>>> for first, frames in src.frames(chunk=16):  # float32 [k, ny, nx]  # doctest: +SKIP
...     ...
"""

from hrtem3d.io.checks import (
    MIN_SIZE,
    PIXEL_SIZE_RANGE_A,
    check_finite,
    length_to_A,
    validate_pixel_size,
)
from hrtem3d.io.readers import SUPPORTED_EXTENSIONS, ImageSource, open_image

__all__ = [
    "MIN_SIZE",
    "PIXEL_SIZE_RANGE_A",
    "SUPPORTED_EXTENSIONS",
    "ImageSource",
    "check_finite",
    "length_to_A",
    "open_image",
    "validate_pixel_size",
]
