"""Movie figures on a hand-made 3-frame movie: overlays, the streamed GIF, traces, Figure 2, event map."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from hrtem3d.labels.scheme import DEFAULT_SCHEME
from hrtem3d.viz.colors import class_colors
from hrtem3d.viz.movie import overlay_frame, write_overlay_movie
from hrtem3d.viz.movie_figures import depth_traces, event_map, figure2_panel, select_trace_columns

N = 256
# (column_id, species, x_px, y_px, n_atoms per frame): away from the label box (top left) and colour bars (top right)
COLUMNS = [
    (0, "Ce", 64.0, 128.0, (2, 2, 2)),
    (1, "Ce", 128.0, 128.0, (11, 11, 10)),
    (2, "O", 192.0, 128.0, (2, 2, 2)),
    (3, "Ce", 64.0, 200.0, (6, 6, 6)),
    (4, "O", 128.0, 200.0, (4, 3, 3)),
]
TIME_STEP = 0.133


def _movie(n_frames: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:N, 0:N]
    frames = []
    for f in range(n_frames):
        img = np.ones((N, N))
        for _, sp, x, y, n in COLUMNS:
            amp = (0.06 if sp == "Ce" else 0.02) * n[f]
            img -= amp * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2))
        frames.append(img + rng.normal(0, 0.02, img.shape))
    return frames


def _columns(n_frames: int = 3, unlinked: bool = True) -> pd.DataFrame:
    rows = []
    for f in range(n_frames):
        for cid, sp, x, y, n in COLUMNS:
            raw = n[f] + (1 if (cid + f) % 2 else 0)
            rows.append(dict(frame=f, column_id=cid, x_px=x, y_px=y, x_A=0.1 * x, y_A=0.1 * y, species=sp,
                             n_atoms=n[f], confidence=0.9, time_s=f * TIME_STEP, n_atoms_raw=raw))
        if unlinked and f == 1:  # a column seen in one frame only, not linked to a track
            rows.append(dict(frame=f, column_id=-1, x_px=200.0, y_px=220.0, x_A=20.0, y_A=22.0, species="Ce",
                             n_atoms=3, confidence=0.4, time_s=f * TIME_STEP, n_atoms_raw=3))
    return pd.DataFrame(rows)


def _events() -> pd.DataFrame:
    return pd.DataFrame([
        dict(frame=2, time_s=2 * TIME_STEP, column_id=1, species="Ce", x_px=128.0, y_px=128.0, n_before=11,
             n_after=10, confidence=0.8, kind="ce_loss"),
        dict(frame=1, time_s=TIME_STEP, column_id=4, species="O", x_px=128.0, y_px=200.0, n_before=4, n_after=3,
             confidence=0.7, kind="o_vacancy"),
    ])


def _no_events() -> pd.DataFrame:
    return _events().iloc[:0]


def _tracks(columns: pd.DataFrame) -> pd.DataFrame:
    g = columns[columns.column_id >= 0].groupby("column_id")
    return pd.DataFrame({"species": g.species.first(), "x_px": g.x_px.mean(), "y_px": g.y_px.mean(),
                         "first_frame": g.frame.min(), "last_frame": g.frame.max(),
                         "n_frames": g.frame.size()}).reset_index()


def _at(rgb: np.ndarray, x_px: float, y_px: float, factor: int) -> np.ndarray:
    """Output pixel under input pixel (x_px, y_px) after block-averaging by `factor`."""
    shift = (factor - 1) / 2
    return rgb[int(round((y_px - shift) / factor)), int(round((x_px - shift) / factor))].astype(int)


def _draw(fig: Figure) -> None:
    fig.savefig(io.BytesIO(), format="png", dpi=40)


def _expected(sp: str, n: int) -> np.ndarray:
    return np.rint(255 * class_colors(DEFAULT_SCHEME)[DEFAULT_SCHEME.class_of(sp, n)]).astype(int)


def test_overlay_frame_shape_and_depth_colours():
    img = _movie()[0]
    cols = _columns()
    c0 = cols[cols.frame == 0]
    rgb = overlay_frame(img, c0, max_side=128)
    assert rgb.dtype == np.uint8 and rgb.shape == (128, 128, 3)
    # far from every column and from the legends: grey (R = G = B)
    bg = rgb[100:110, 5:15].astype(int)
    assert (bg[..., 0] == bg[..., 1]).all() and (bg[..., 1] == bg[..., 2]).all()
    ce2, ce11, o2 = (_at(rgb, x, y, 2) for x, y in ((64, 128), (128, 128), (192, 128)))
    for px in (ce2, ce11, o2):
        assert len(set(px.tolist())) > 1, "a marker pixel must be coloured, not grey"
    # the marker carries its species' depth colour, as viz.colors has it
    assert np.abs(ce2 - _expected("Ce", 2)).max() <= 2
    assert np.abs(ce11 - _expected("Ce", 11)).max() <= 2
    assert np.abs(o2 - _expected("O", 2)).max() <= 2
    assert np.abs(ce2 - ce11).max() > 30  # deeper column, other colour
    assert np.abs(ce2 - o2).max() > 30  # same depth, other species, other colour


def test_overlay_frame_never_enlarges_and_handles_odd_shapes_and_no_columns():
    img = _movie()[0]
    assert overlay_frame(img, _columns().query("frame == 0"), max_side=512).shape == (N, N, 3)
    rect = np.random.default_rng(1).normal(size=(300, 200))
    out = overlay_frame(rect, _columns().iloc[:0], max_side=128)  # factor 3: ceil(300 / 3) x ceil(200 / 3)
    assert out.shape == (100, 67, 3) and out.dtype == np.uint8


def test_overlay_frame_circles_events():
    img = _movie()[2]
    cols = _columns().query("frame == 2")
    ev = _events().query("frame == 2")
    plain = overlay_frame(img, cols, None, max_side=256).astype(int)
    marked = overlay_frame(img, cols, ev, max_side=256).astype(int)
    diff = np.abs(plain - marked).sum(-1) > 0
    ys, xs = np.nonzero(diff)
    assert diff.sum() > 20
    # the change (circle and its label) sits at the event, not elsewhere
    assert np.hypot(xs - 128, ys - 128).min() < 25
    assert (np.hypot(xs - 128, ys - 128) < 80).mean() > 0.9


def test_write_overlay_movie_streams_a_gif(tmp_path):
    frames = _movie()
    consumed = []

    def gen():
        for i, f in enumerate(frames):
            consumed.append(i)
            yield i, f

    out = tmp_path / "movie" / "overlay.gif"
    got = write_overlay_movie(gen(), _columns(), _events(), out, fps=7.5, max_side=128)
    assert got == out and out.exists()
    assert consumed == [0, 1, 2]
    assert [p.name for p in out.parent.iterdir()] == ["overlay.gif"]  # no temporary file left
    movie = iio.imread(out, index=None)
    assert movie.shape == (3, 128, 128, 3)
    # frame contents survive the 256-colour quantisation: frames differ where the depths changed
    assert np.abs(movie[0].astype(int) - movie[2].astype(int)).sum() > 0
    from PIL import Image

    with Image.open(out) as im:
        durations = []
        for k in range(im.n_frames):
            im.seek(k)
            durations.append(im.info["duration"])
    assert all(d in (130, 140) for d in durations)  # 7.5 fps = 133 ms, GIF delays are centiseconds


def test_write_overlay_movie_errors_leave_nothing(tmp_path):
    frames = _movie()
    out = tmp_path / "bad.gif"
    with pytest.raises(ValueError):
        write_overlay_movie(iter([(0, frames[0]), (1, frames[1][:100])]), _columns(), _no_events(), out)
    with pytest.raises(ValueError):
        write_overlay_movie(iter([]), _columns(), _no_events(), out)
    with pytest.raises(ValueError):
        write_overlay_movie(iter([(0, frames[0])]), _columns(), _no_events(), tmp_path / "bad.mp4")
    assert list(tmp_path.iterdir()) == []


def test_write_overlay_movie_with_empty_events(tmp_path):
    out = write_overlay_movie(enumerate(_movie()), _columns(), _no_events(), tmp_path / "m.gif", max_side=64)
    assert iio.imread(out, index=None).shape == (3, 64, 64, 3)


def test_figure2_panel():
    img = _movie()[0]
    cols = _columns().query("frame == 0")
    labels = np.zeros((128, 128), int)  # a label image at another pixel size than the frame
    for _, r in cols.iterrows():
        labels[int(r.y_px / 2) - 2:int(r.y_px / 2) + 3, int(r.x_px / 2) - 2:int(r.x_px / 2) + 3] = \
            DEFAULT_SCHEME.class_of(r.species, r.n_atoms)
    fig = figure2_panel(img, labels, cols, DEFAULT_SCHEME, pixel_size_A=0.1, title="frame 0")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4  # frame, output, Ce and O colour bars
    _draw(fig)
    assert any("nm" in t.get_text() for t in fig.axes[0].texts)


def test_select_trace_columns_puts_event_columns_first():
    cols = _columns()
    # column 3 has the longest track here
    extra = pd.DataFrame([dict(cols.iloc[3]) | dict(frame=f, time_s=f * TIME_STEP) for f in (3, 4)])
    cols = pd.concat([cols, extra], ignore_index=True)
    ids = select_trace_columns(cols, _events(), max_columns=12)
    assert ids[:2] == [4, 1]  # events first, earliest event first
    assert ids[2] == 3  # then the longest track
    assert sorted(ids) == [0, 1, 2, 3, 4] and -1 not in ids
    assert select_trace_columns(cols, _events(), max_columns=1) == [4]
    assert select_trace_columns(cols, _no_events())[0] == 3


def test_depth_traces_panels():
    cols = _columns()
    fig = depth_traces(cols, _events())
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 5
    assert fig.axes[0].get_title().startswith("column 4") and fig.axes[1].get_title().startswith("column 1")
    labels = {t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()}
    assert {"ce_loss", "o_vacancy"} <= labels
    assert len(depth_traces(cols, _no_events(), max_columns=3).axes) == 3
    assert len(depth_traces(cols, _events(), column_ids=[2]).axes) == 1
    assert len(depth_traces(cols.iloc[:0], _no_events()).axes) == 1  # nothing to show: one note
    _draw(fig)


def test_event_map():
    cols = _columns()
    img = _movie()[0]
    fig = event_map(img, _tracks(cols), _events(), pixel_size_A=0.1)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(t.startswith("ce_loss") for t in legend) and any(t.startswith("o_vacancy") for t in legend)
    _draw(fig)
    empty = event_map(img, _tracks(cols), _no_events(), pixel_size_A=0.1)
    assert len(empty.axes) == 1
    _draw(empty)


def test_viz_movie_imports_no_pipeline_stage():
    import hrtem3d.viz.movie as m

    tree = ast.parse(Path(m.__file__).read_text())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    banned = ("hrtem3d.analyze", "hrtem3d.data", "hrtem3d.train", "hrtem3d.jobs.workflows", "hrtem3d.cli")
    assert not [m for m in mods if m.startswith(banned)]
