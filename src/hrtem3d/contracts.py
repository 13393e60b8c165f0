"""The table contracts every output follows (../shared/DESIGN.md, "The column table").

One place for the field lists, so that `segment`, `track`, the simulated movies' ground truth
and the tests agree. Extra fields may follow these in any table.

Example:
    >>> from hrtem3d.contracts import COLUMN_FIELDS
    >>> COLUMN_FIELDS[:4]
    ['frame', 'column_id', 'x_px', 'y_px']
"""

from __future__ import annotations

#: One row per detected column per frame (`segment`, `track`'s columns.parquet).
COLUMN_FIELDS = ["frame", "column_id", "x_px", "y_px", "x_A", "y_A", "species", "n_atoms", "confidence"]

#: One row per linked column (`track`'s tracks.parquet); positions drift-corrected.
TRACK_FIELDS = ["column_id", "species", "x_px", "y_px", "xc_A", "yc_A", "first_frame", "last_frame", "n_frames"]

#: One row per lasting change of a tracked column's depth (`track`'s events.csv).
EVENT_FIELDS = ["frame", "time_s", "column_id", "species", "x_px", "y_px", "n_before", "n_after", "confidence",
                "kind"]

#: Ground truth of a simulated movie: every column in every frame.
TRUTH_FIELDS = ["frame", "species", "x_A", "y_A", "x_px", "y_px", "n_atoms", "key_u", "key_v"]

#: Ground truth of a simulated movie: the events written into it.
TRUTH_EVENT_FIELDS = ["frame", "kind", "species", "key_u", "key_v", "x_A", "y_A", "x_px", "y_px", "n_before",
                      "n_after"]

#: The kinds of event, in the truth and in `track`'s output alike.
EVENT_KINDS = ("ce_loss", "o_vacancy", "migration")
