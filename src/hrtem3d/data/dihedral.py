"""The eight symmetries of the square, one definition for training augmentation and test-time augmentation.

Symmetry `t` (0..7) rotates the last two axes by `t % 4` quarter turns, then flips the last axis if
`t >= 4`. It acts alike on numpy arrays and torch tensors, so the dataset's augmentation and the
segmenter's test-time averaging cannot drift apart.

Example:
    >>> import numpy as np
    >>> a = np.arange(6).reshape(2, 3)
    >>> all((dihedral_inverse(dihedral(a, t), t) == a).all() for t in range(8))
    True
"""

from __future__ import annotations

import numpy as np

N_SYMMETRIES = 8


def dihedral(a, t: int):
    """Symmetry `t` of `a` (numpy array or torch tensor) on its last two axes."""
    if isinstance(a, np.ndarray):
        a = np.rot90(a, t % 4, axes=(-2, -1))
        return a[..., ::-1] if t >= 4 else a
    import torch

    a = torch.rot90(a, t % 4, dims=(-2, -1))
    return torch.flip(a, dims=(-1,)) if t >= 4 else a


def dihedral_inverse(a, t: int):
    """Undo `dihedral(., t)`."""
    if isinstance(a, np.ndarray):
        a = a[..., ::-1] if t >= 4 else a
        return np.rot90(a, -(t % 4), axes=(-2, -1))
    import torch

    a = torch.flip(a, dims=(-1,)) if t >= 4 else a
    return torch.rot90(a, -(t % 4), dims=(-2, -1))
