"""`match_events`, the truth matcher of the event benchmarks and tests, and `find_events`, on hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hrtem3d.tracking.events import find_events, match_events

PX = 0.1  # Å per pixel


def _table(rows):
    cols = ["frame", "species", "x_px", "y_px", "n_before", "n_after", "kind"]
    return pd.DataFrame(rows, columns=cols)


def test_matching_needs_species_sign_frames_and_distance_and_is_closest_first_one_to_one():
    truth = _table([
        (10, "Ce", 100.0, 100.0, 5, 4, "ce_loss"),      # t0
        (20, "O", 200.0, 50.0, 3, 2, "o_vacancy"),      # t1
        (30, "Ce", 300.0, 300.0, 4, 5, "migration"),    # t2
    ])
    found = _table([
        (11, "Ce", 103.0, 100.0, 5, 4, "ce_loss"),      # f0: 1 frame, 0.3 Å from t0: a match
        (10, "Ce", 101.0, 100.0, 6, 5, "ce_loss"),      # f1: 0 frames, 0.1 Å from t0: closer, wins t0
        (20, "Ce", 200.0, 50.0, 3, 2, "ce_loss"),       # f2: t1's place and time, wrong species
        (20, "O", 200.0, 50.0, 2, 3, "o_vacancy"),      # f3: t1, wrong sign of change
        (23, "O", 200.0, 50.0, 3, 2, "o_vacancy"),      # f4: t1, 3 frames late (> 2)
        (20, "O", 208.0, 50.0, 3, 2, "o_vacancy"),      # f5: t1, 0.8 Å away (> 0.7)
        (28, "Ce", 300.0, 306.0, 4, 5, "migration"),    # f6: t2, 2 frames early and 0.6 Å: within both limits
    ])
    t, f = match_events(found, truth, PX)
    assert list(t.found_row) == [1, -1, 6]
    assert list(f.truth_row) == [-1, 0, -1, -1, -1, -1, 2]  # f0 lost t0 to the closer f1: a false event
    assert t.d_frames.tolist()[0] == 0 and t.d_frames.tolist()[2] == 2
    assert t.d_A.tolist()[0] == pytest.approx(0.1) and t.d_A.tolist()[2] == pytest.approx(0.6)
    # same_counts: the depths before and after agree too (f1 says 6 -> 5 for a 5 -> 4 change)
    assert t.same_counts.tolist() == [False, False, True]
    assert t.found_kind.tolist() == ["ce_loss", "", "migration"]


def test_the_limits_are_inclusive_and_set_by_the_arguments():
    truth = _table([(10, "O", 0.0, 0.0, 2, 1, "o_vacancy")])
    edge = _table([(12, "O", 3.0, 0.0, 2, 1, "o_vacancy")])  # exactly 2 frames and, at 0.25 Å/px, 0.75 Å
    assert list(match_events(edge, truth, 0.25, max_distance_A=0.75)[0].found_row) == [0]
    assert list(match_events(edge, truth, 0.25, max_distance_A=0.75, max_frames=1)[0].found_row) == [-1]
    assert list(match_events(edge, truth, 0.25, max_distance_A=0.74)[0].found_row) == [-1]
    # distance is Euclidean in Å: 0.3 Å in x and 0.4 Å in y is 0.5 Å
    diag = _table([(10, "O", 3.0, 4.0, 2, 1, "o_vacancy")])
    t, _ = match_events(diag, truth, PX, max_distance_A=0.5)
    assert list(t.found_row) == [0] and t.d_A.iloc[0] == pytest.approx(0.5)
    assert list(match_events(diag, truth, PX, max_distance_A=0.49)[0].found_row) == [-1]


def test_no_events_on_either_side():
    truth = _table([(10, "O", 0.0, 0.0, 2, 1, "o_vacancy")])
    t, f = match_events(_table([]), truth, PX)
    assert list(t.found_row) == [-1] and f.empty
    t, f = match_events(truth, _table([]), PX)
    assert t.empty and list(f.truth_row) == [-1]


def test_a_change_on_the_last_processed_frame_keeps_that_frame_time_and_position():
    # processed movie frames 0, 2, 5, 9 (some skipped); one O column moving 10 px a frame
    frames, times_s = np.array([0, 2, 5, 9]), np.array([0.0, 0.2, 0.5, 0.9])
    columns = pd.DataFrame({"frame": frames, "column_id": 7, "x_px": [10.0, 20.0, 30.0, 40.0],
                            "y_px": [5.0, 6.0, 7.0, 8.0]})
    tracks = pd.DataFrame([{"column_id": 7, "species": "O", "x_px": 25.0, "y_px": 6.5}])
    # time index 1, the last index 3, and 4 (one past the end: clipped to the last frame)
    changes = pd.DataFrame({"track": [0, 0, 0], "t": [1, 3, 4], "n_before": [3, 2, 3],
                            "n_after": [2, 3, 2], "confidence": [0.9, 0.8, 0.7]})
    ev = find_events(changes, frames, tracks, columns, times_s, PX)
    assert ev.frame.tolist() == [2, 9, 9]
    assert ev.time_s.tolist() == [0.2, 0.9, 0.9]
    assert ev.x_px.tolist() == [20.0, 40.0, 40.0] and ev.y_px.tolist() == [6.0, 8.0, 8.0]
    assert ev.kind.tolist() == ["o_vacancy", "o_gain", "o_vacancy"]
    assert ev.n_before.tolist() == [3, 2, 3] and ev.confidence.tolist() == [0.9, 0.8, 0.7]
