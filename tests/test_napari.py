"""The napari plugin: the reader on real microscope files, the widget headless.

Without a display, Qt runs offscreen (no OpenGL): the widget is driven against napari's `ViewerModel`.
Under a display (e.g. `xvfb-run -a make test`), it is also docked in a full viewer through the manifest.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import hrtem3d  # noqa: E402
from hrtem3d.io import open_image  # noqa: E402
from hrtem3d.napari.reader import get_reader  # noqa: E402
from hrtem3d.napari.widget import columns_to_points, layer_pixel_size_A  # noqa: E402


def _qt_gui() -> bool:
    """Whether Qt's widgets load (they need system libraries: libGL, libEGL, libxkbcommon, fontconfig)."""
    try:
        import qtpy.QtWidgets  # noqa: F401
    except Exception:
        return False
    return True


needs_qt = pytest.mark.skipif(not _qt_gui(), reason="Qt cannot load here (system libraries missing: apt-get "
                              "install libgl1 libegl1 libxkbcommon0 libdbus-1-3 libfontconfig1)")
MICROSCOPE = Path(__file__).resolve().parents[1] / ".." / "shared" / "testdata" / "microscope"
MANIFEST = Path(hrtem3d.__file__).parent / "napari" / "napari.yaml"


@pytest.fixture(scope="module")
def particle():
    return hrtem3d.simulate_particle(seed=4)


@pytest.mark.parametrize("name", ["tia/64x64x5_TEM_preview.emi", "dm/test_STEM_image.dm3"])
def test_reader_gives_the_files_frames_and_pixel_size(name):
    path = MICROSCOPE / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    reader = get_reader(str(path))
    assert reader is not None
    (data, meta, kind), = reader(str(path))
    src = open_image(path)  # the library's own reading is the truth
    assert kind == "image" and meta["metadata"]["pixel_size_A"] == src.pixel_size_A
    assert np.array_equal(np.asarray(data), src.read_all()[0] if src.n_frames == 1 else src.read_all())
    assert meta["scale"][-1] == src.pixel_size_A and len(meta["scale"]) == np.ndim(data)
    assert get_reader(str(path.with_suffix(".txt"))) is None


def test_manifest_names_importable_commands():
    import npe2

    pm = npe2.PluginManifest.from_file(MANIFEST)
    assert pm.name == "hrtem3d"
    for cmd in pm.contributions.commands:
        module, attr = cmd.python_name.split(":")
        assert callable(getattr(__import__(module, fromlist=[attr]), attr)), cmd.python_name
    patterns = pm.contributions.readers[0].filename_patterns
    from hrtem3d.io import SUPPORTED_EXTENSIONS

    assert {p.lstrip("*") for p in patterns} == set(SUPPORTED_EXTENSIONS)


def test_points_from_a_column_table_without_qt(particle):
    cols = hrtem3d.segment(particle.image, particle.pixel_size_A)
    data, opts = columns_to_points(cols, movie=False, pixel_size_A=particle.pixel_size_A, scale=(0.16, 0.16))
    assert data.shape == (len(cols), 2)
    np.testing.assert_array_equal(data[:, 0], cols.y_px)  # napari is (row, column) = (y, x)
    np.testing.assert_array_equal(data[:, 1], cols.x_px)
    assert opts["features"]["n_atoms"].tolist() == cols.n_atoms.tolist()
    shade = opts["face_color"][:, :3].sum(1)  # viridis brightens with the atom count
    assert np.all(np.diff(shade[np.argsort(cols.n_atoms.to_numpy(), kind="stable")]) >= -1e-9)
    movie = pd.concat([cols, cols.assign(frame=1)])
    data, _ = columns_to_points(movie, movie=True, pixel_size_A=particle.pixel_size_A)
    assert data.shape == (2 * len(cols), 3) and set(data[:, 0]) == {0, 1}


def _check(viewer, image, movie, particle, widget) -> None:
    """Segment `image` and `movie` through `widget`; the Points layers against the API's own tables."""
    widget(viewer=viewer, image=image)
    truth = hrtem3d.segment(particle.image, particle.pixel_size_A)
    points = viewer.layers[f"{image.name} columns"]
    assert len(points.data) == len(truth) > 0
    assert points.features["n_atoms"].tolist() == truth.n_atoms.tolist()
    assert set(hrtem3d.COLUMN_FIELDS) <= set(points.features.columns)
    np.testing.assert_allclose(points.data, truth[["y_px", "x_px"]].to_numpy())
    colours = points.face_color
    deep, shallow = truth.n_atoms.to_numpy().argmax(), truth.n_atoms.to_numpy().argmin()
    assert not np.allclose(colours[deep], colours[shallow])  # coloured by atoms in the column
    assert tuple(points.scale) == tuple(image.scale)

    widget(viewer=viewer, image=movie)
    mp = viewer.layers[f"{movie.name} columns"]
    frames = mp.data[:, 0]
    assert set(frames) == {0, 1} and (frames == 0).sum() == len(truth)
    shift = np.median(mp.data[frames == 1, 2]) - np.median(mp.data[frames == 0, 2])
    assert abs(shift - 3) < 0.5  # the second frame's columns sit 3 pixels to the right


def _layers(viewer, particle):
    image = viewer.add_image(particle.image, scale=(particle.pixel_size_A,) * 2, name="particle")
    movie = viewer.add_image(np.stack([particle.image, np.roll(particle.image, 3, axis=1)]), name="movie",
                             metadata={"pixel_size_A": particle.pixel_size_A})
    assert layer_pixel_size_A(movie) == particle.pixel_size_A
    return image, movie


@needs_qt
def test_widget_adds_the_columns_to_a_viewer(qtbot, particle):
    from napari.components import ViewerModel

    from hrtem3d.napari.widget import segment_widget

    viewer = ViewerModel()
    widget = segment_widget()  # the Qt widget itself, offscreen
    assert [w.name for w in widget][:5] == ["viewer", "image", "contrast", "pixel_size_A", "lattice"]
    assert widget.lattice.value == "auto" and set(widget.lattice.choices) == {"auto", "static", "vibrating"}
    _check(viewer, *_layers(viewer, particle), particle, widget)
    image = viewer.layers["particle"]
    widget(viewer=viewer, image=image, lattice="vibrating")  # the reading chosen reaches the model
    vib = viewer.layers[-1].features
    want = hrtem3d.segment(particle.image, particle.pixel_size_A, hrtem3d.load_model(lattice="vibrating"))
    np.testing.assert_array_equal(vib.n_atoms.to_numpy(), want.n_atoms.to_numpy())
    with pytest.raises(hrtem3d.HrtemError, match="pixel size"):
        widget(viewer=viewer, image=viewer.add_image(particle.image, name="uncalibrated"))


@needs_qt
@pytest.mark.skipif(os.environ.get("QT_QPA_PLATFORM") == "offscreen", reason="no OpenGL offscreen: run under a "
                    "display (xvfb-run -a) to dock the widget in a full viewer")
def test_widget_docked_in_a_viewer_through_the_manifest(make_napari_viewer, particle):
    import npe2

    pm = npe2.PluginManager.instance()
    if "hrtem3d" not in {m.name for m in pm.iter_manifests()}:
        pm.register(npe2.PluginManifest.from_file(MANIFEST))  # a checkout not installed with its entry points
    viewer = make_napari_viewer()
    image, movie = _layers(viewer, particle)
    _, widget = viewer.window.add_plugin_dock_widget("hrtem3d", "Segment columns")
    _check(viewer, image, movie, particle, widget)
