"""Stage 3: per-pixel training targets from column tables."""

from hrtem3d.labels.masks import LabelConfig, class_weights_from_counts, make_targets, weight_map
from hrtem3d.labels.scheme import DEFAULT_SCHEME, ClassScheme

__all__ = ["DEFAULT_SCHEME", "ClassScheme", "LabelConfig", "class_weights_from_counts", "make_targets",
           "weight_map"]
