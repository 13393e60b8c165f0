"""Tests of hrtem3d.io: real microscope files, synthetic TIFF/NPY stacks, and bad input."""

from __future__ import annotations

import math
import shutil
import struct
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import MICROSCOPE

from hrtem3d.errors import HrtemError
from hrtem3d.io import ImageSource, check_finite, length_to_A, open_image, validate_pixel_size

DATA = MICROSCOPE  # ../shared/testdata/microscope, or under $HRTEM3D_SHARED
needs_data = pytest.mark.usefixtures("microscope_dir")  # skips when missing; fails under CI=true

# Reads tiny or coarse test files: any size from 1 pixel, any pixel size.
ANY = {"min_size": 1, "pixel_size_range_A": (1e-6, 1e7)}

# (file, shape, pixel size in Å, frame interval in s, open_image kwargs, index of the signal in the
#  rosettasciio result, regex of the error open_image gives with its defaults or None if it opens)
IMAGES = [
    ("dm/test_STEM_image.dm3", (1, 68, 68), 2.48538, None, {}, 0, None),
    ("dm/test_dm_image_um_unit.dm3", (1, 68, 68), 1686.75, None, ANY, 0, r"1686\.7\d* Å per pixel, outside"),
    ("dm/test-MonarcCL_mono-image.dm4", (1, 2, 2), 183253.5, None, ANY, 0, r"only 2 x 2 pixels"),
    ("dm/test_stackbuilder_imagestack.dm3", (3, 2, 16), 599.829, None, ANY, 0, r"only 2 x 16 pixels"),
    ("emd/FFTComplexOdd.emd", (1, 128, 128), 271.153, None, ANY, 1, r"271\.15\d* Å per pixel"),
    ("emd/Si100_2x1x1_3D.emd", (1, 22, 44), 2.5, None, {}, 0, None),
    ("emd/fei_example_dpc_titles.emd", (1, 2, 2), 0.996199, None, ANY, 0, r"only 2 x 2 pixels"),
    ("emd/fei_example_tem_stack.emd", (2, 3, 3), 0.0817288, 0.8, ANY, 0, r"only 3 x 3 pixels"),
    ("mrc/HAADFscan.mrc", (1, 16, 16), 56.7913, None, {}, 0, None),
    ("tia/128x128_TEM_acquire-sum1.emi", (1, 128, 128), 214.793, None, ANY, 0, r"214\.79\d* Å per pixel"),
    ("tia/128x128_TEM_acquire-sum1_1.ser", (1, 128, 128), 214.793, None, ANY, 0, r"214\.79"),
    ("tia/16x16_STEM_BF_DF_acquire.emi", (1, 16, 16), 215.1, None, ANY, 0, r"215\.1\d* Å per pixel"),
    ("tia/16x16_STEM_BF_DF_acquire_1.ser", (1, 16, 16), 215.1, None, ANY, 0, r"215\.1"),
    ("tia/16x16_STEM_BF_DF_acquire_2.ser", (1, 16, 16), 215.1, None, ANY, 0, r"215\.1"),
    ("tia/64x64_TEM_images_acquire.emi", (1, 64, 64), 62.8183, None, {}, 0, None),
    ("tia/64x64_TEM_images_acquire_1.ser", (1, 64, 64), 62.8183, None, {}, 0, None),
    ("tia/64x64x5_TEM_preview.emi", (5, 64, 64), 62.8183, None, {}, 0, None),
    ("tia/64x64x5_TEM_preview_1.ser", (5, 64, 64), 62.8183, None, {}, 0, None),
    ("tiff/FEI-Helios-Ebeam-16bits.tif", (1, 471, 512), 33724.0, None, ANY, 0, r"33724 Å per pixel"),
    ("tiff/TVIPS_bin4.tif", (1, 1024, 1024), 14.208, None, {}, 0, None),
    ("tiff/test_loading_image_saved_with_DM.tif", (1, 68, 68), 1686.75, None, ANY, 0, r"1686\.7"),
    ("tiff/test_loading_image_saved_with_DM_stack.tif", (2, 68, 68), 1686.74, 2.5, ANY, 0, r"1686\.7"),
    ("tiff/test_loading_image_saved_with_imageJ.tif", (1, 68, 68), 1686.75, None, ANY, 0, r"1686\.7"),
]

# Images without a usable calibration: (file, shape, what the error says).
UNCALIBRATED = [
    ("dm/2D_test-2.dm4", (1, 2, 2), "no spatial calibration"),
    ("dm/3D_test-2.dm4", (2, 2, 2), "no spatial calibration"),
    ("emd/example_image.emd", (1, 3, 3), "no spatial calibration"),
    ("mrc/20241021_00405_final.mrc", (1, 4, 8), r"-1 nm per pixel"),
    ("mrc/Custom_movie.mrc", (30, 16, 16), r"-1 nm per pixel"),
]

# Files that are not real-space images: (file, regex the message must match).
REFUSED = [
    ("dm/test-EELS_spectrum.dm3", r"EELS spectrum \(2048 channels in eV\)"),
    ("dm/test_diffraction_pattern.dm3", r"diffraction pattern .*1/nm"),
    ("dm/test_fft_packed_complex8.dm4", r"complex-valued data \(complex64\), such as an FFT"),
    ("emd/fei_example_complex_fft.emd", r"complex-valued data .*FFT"),
    ("tia/16x16-point_spectrum-1x1024.emi", r"spectrum \(1024 channels in eV\)"),
    ("tia/16x16-point_spectrum-1x1024_1.ser", r"spectrum \(1024 channels in eV\)"),
    ("tia/64x64_diffraction_acquire.emi", r"diffraction pattern .*1 / nm"),
    ("tia/64x64_diffraction_acquire_1.ser", r"diffraction pattern .*1 / nm"),
]


def _reference(rel: str, index: int) -> np.ndarray:
    """Pixels read eagerly by the underlying library, as float32 [n, ny, nx]."""
    path = DATA / rel
    if path.suffix == ".tif":
        data = tifffile.imread(path)
    else:
        module = {".dm3": "digitalmicrograph", ".dm4": "digitalmicrograph", ".emd": "emd", ".mrc": "mrc",
                  ".emi": "tia", ".ser": "tia"}[path.suffix]
        reader = __import__(f"rsciio.{module}", fromlist=["file_reader"]).file_reader
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = reader(str(path))[index]["data"]
    data = np.asarray(data, dtype=np.float32)
    return data[None] if data.ndim == 2 else data


# --------------------------------------------------------------------------------------------
# Real files
# --------------------------------------------------------------------------------------------


@needs_data
def test_every_test_file_is_covered() -> None:
    """Each file in the data folder is in exactly one table, so a new file cannot go untested."""
    listed = [r[0] for r in IMAGES] + [r[0] for r in UNCALIBRATED] + [r[0] for r in REFUSED]
    assert len(listed) == len(set(listed))
    on_disk = {p.relative_to(DATA).as_posix() for p in DATA.rglob("*") if p.is_file() and p.suffix != ".md"}
    assert on_disk == set(listed)


@needs_data
@pytest.mark.parametrize(("rel", "shape", "px", "dt", "kwargs", "index", "default_error"), IMAGES,
                         ids=[r[0] for r in IMAGES])
def test_real_image_shape_calibration_and_pixels(rel, shape, px, dt, kwargs, index, default_error) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the DM stack TIFF warns about non-square pixels
        src = open_image(DATA / rel, **kwargs)
    assert isinstance(src, ImageSource)
    assert src.shape == shape
    assert src.pixel_size_A == pytest.approx(px, rel=1e-5)
    assert src.pixel_size_from_file_A == pytest.approx(px, rel=1e-5)
    if dt is None:
        assert src.frame_interval_s is None
    else:
        assert src.frame_interval_s == pytest.approx(dt)
    data = src.read_all()
    assert data.dtype == np.float32 and data.shape == shape
    np.testing.assert_array_equal(data, _reference(rel, index))


@needs_data
@pytest.mark.parametrize(("rel", "default_error"), [(r[0], r[6]) for r in IMAGES if r[6]],
                         ids=[r[0] for r in IMAGES if r[6]])
def test_real_image_default_limits_refuse_with_reason(rel, default_error) -> None:
    """Tiny images and coarse (SEM-scale) calibrations are refused by default, saying why."""
    with pytest.raises(HrtemError, match=default_error) as info:
        open_image(DATA / rel)
    assert "\n" not in str(info.value)


@needs_data
def test_real_image_override_beats_absurd_calibration() -> None:
    src = open_image(DATA / "dm/test_dm_image_um_unit.dm3", pixel_size_A=0.1)
    assert src.pixel_size_A == 0.1
    assert src.pixel_size_from_file_A == pytest.approx(1686.75, rel=1e-5)
    assert "given by the user" in src.description


@needs_data
def test_multi_signal_files_pick_the_first_real_space_image() -> None:
    src = open_image(DATA / "emd/FFTComplexOdd.emd", **ANY)
    assert "'HAADF'" in src.description and "signal 2 of 2" in src.description
    assert "Half FFT" in src.description
    src = open_image(DATA / "emd/fei_example_dpc_titles.emd", **ANY)
    assert "'B-D'" in src.description and "signal 1 of 9" in src.description
    src = open_image(DATA / "tia/16x16_STEM_BF_DF_acquire.emi", **ANY)
    assert "_1.ser" in src.description and "signal 1 of 2" in src.description


@needs_data
def test_non_square_pixels_warn_and_use_x() -> None:
    with pytest.warns(UserWarning, match="not square"):
        src = open_image(DATA / "tiff/test_loading_image_saved_with_DM_stack.tif", **ANY)
    assert src.pixel_size_A == pytest.approx(1686.74, rel=1e-5)  # x; y reads 16867.4


@needs_data
@pytest.mark.parametrize(("rel", "shape", "problem"), UNCALIBRATED, ids=[r[0] for r in UNCALIBRATED])
def test_uncalibrated_files_need_a_pixel_size(rel, shape, problem) -> None:
    with pytest.raises(HrtemError, match=problem) as info:
        open_image(DATA / rel, min_size=1)
    assert "`pixel_size_A`" in str(info.value) and info.value.param == "pixel_size_A"
    src = open_image(DATA / rel, pixel_size_A=0.75, min_size=1)
    assert src.shape == shape
    assert src.pixel_size_A == 0.75
    assert src.pixel_size_from_file_A is None
    assert src.read_all().shape == shape


@needs_data
@pytest.mark.parametrize(("rel", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_non_images_are_refused_naming_what_they_hold(rel, message) -> None:
    for kwargs in ({}, {"pixel_size_A": 1.0, "min_size": 1}):  # an override does not make an image
        with pytest.raises(HrtemError, match=message) as info:
            open_image(DATA / rel, **kwargs)
        assert "not a real-space image" in str(info.value)


@needs_data
def test_lone_tia_diffraction_ser_is_flagged(tmp_path: Path) -> None:
    """Without its .emi, rosettasciio labels a diffraction .ser in nm at ~1e17 nm per pixel."""
    ser = tmp_path / "64x64_diffraction_acquire_1.ser"
    shutil.copy(DATA / "tia/64x64_diffraction_acquire_1.ser", ser)
    with pytest.raises(HrtemError, match="diffraction pattern"):
        open_image(ser)


@needs_data
def test_tia_emi_without_ser_says_to_keep_the_pair(tmp_path: Path) -> None:
    emi = tmp_path / "64x64_TEM_images_acquire.emi"
    shutil.copy(DATA / "tia/64x64_TEM_images_acquire.emi", emi)
    with pytest.raises(HrtemError, match=r"_1\.ser"):
        open_image(emi)


@needs_data
def test_real_movie_chunks() -> None:
    src = open_image(DATA / "mrc/Custom_movie.mrc", pixel_size_A=1.0)
    whole = src.read_all()
    chunks = list(src.frames(chunk=7))
    assert [first for first, _ in chunks] == [0, 7, 14, 21, 28]
    assert [block.shape[0] for _, block in chunks] == [7, 7, 7, 7, 2]
    np.testing.assert_array_equal(np.concatenate([b for _, b in chunks]), whole)
    part = list(src.frames(start=5, stop=12, chunk=4))
    assert [first for first, _ in part] == [5, 9]
    np.testing.assert_array_equal(np.concatenate([b for _, b in part]), whole[5:12])
    with pytest.raises(HrtemError, match="outside the 30 frame"):
        list(src.frames(start=31))


# --------------------------------------------------------------------------------------------
# Synthetic TIFF and NPY stacks
# --------------------------------------------------------------------------------------------


def _movie(n: int = 5, ny: int = 32, nx: int = 40, dtype=np.float32) -> np.ndarray:
    return (np.arange(n * ny * nx) % 5000).reshape(n, ny, nx).astype(dtype)


@pytest.mark.parametrize(("unit", "scale", "expected_A"), [
    ("nm", 0.05, 0.5), ("micron", 5e-5, 0.5), ("\\u00B5m", 2e-5, 0.2), ("A", 0.3, 0.3), ("pm", 25.0, 0.25),
])
def test_imagej_tiff_stack_calibration_and_chunks(tmp_path: Path, unit, scale, expected_A) -> None:
    movie = _movie()
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, movie, imagej=True, resolution=(1 / scale, 1 / scale),
                     metadata={"unit": unit, "finterval": 0.25, "axes": "TYX"})
    src = open_image(path)
    assert src.shape == (5, 32, 40)
    assert src.pixel_size_A == pytest.approx(expected_A, rel=1e-6)
    assert src.frame_interval_s == pytest.approx(0.25)
    assert "imagej" in src.description
    chunks = list(src.frames(chunk=2))
    assert [(first, block.shape) for first, block in chunks] == [(0, (2, 32, 40)), (2, (2, 32, 40)),
                                                                 (4, (1, 32, 40))]
    for first, block in chunks:
        assert block.dtype == np.float32 and block.flags.writeable
        np.testing.assert_array_equal(block, movie[first:first + block.shape[0]])


def test_imagej_tiff_single_image_and_uint16(tmp_path: Path) -> None:
    image = _movie(1, 48, 64, np.uint16)[0]
    path = tmp_path / "image.tiff"
    tifffile.imwrite(path, image, imagej=True, resolution=(10.0, 10.0), metadata={"unit": "nm"})
    src = open_image(path)
    assert src.shape == (1, 48, 64) and src.dtype == np.uint16
    assert src.pixel_size_A == pytest.approx(1.0)
    np.testing.assert_array_equal(src.read_all()[0], image)


def test_tiff_without_calibration_needs_pixel_size(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, _movie(3), compression="zlib", photometric="minisblack")
    with pytest.raises(HrtemError, match="no spatial calibration.*`pixel_size_A`"):
        open_image(path)
    src = open_image(path, pixel_size_A=0.1)
    np.testing.assert_array_equal(src.read_all(), _movie(3))


def test_tiff_in_reciprocal_units_is_a_diffraction_pattern(tmp_path: Path) -> None:
    path = tmp_path / "dp.tif"
    tifffile.imwrite(path, _movie(1)[0], imagej=True, resolution=(10.0, 10.0), metadata={"unit": "1/nm"})
    with pytest.raises(HrtemError, match="diffraction pattern"):
        open_image(path)


def test_rgb_tiff_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.zeros((16, 16, 3), np.uint8), photometric="rgb")
    with pytest.raises(HrtemError, match="colour"):
        open_image(path, pixel_size_A=1.0)


def _peak_bytes_while_iterating(src: ImageSource, chunk: int) -> int:
    tracemalloc.start()
    try:
        for _first, block in src.frames(chunk=chunk):
            del block
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_frames_are_read_lazily(tmp_path: Path) -> None:
    """Iterating 4 frames at a time never holds more than a few chunks (each 1 MiB; whole 16 MiB)."""
    movie = _movie(64, 256, 256, np.uint16)
    tif = tmp_path / "big.tif"
    tifffile.imwrite(tif, movie, imagej=True, resolution=(10.0, 10.0), metadata={"unit": "nm", "axes": "TYX"})
    npy = tmp_path / "big.npy"
    np.save(npy, movie.astype(np.float32))
    for path in (tif, npy):
        src = open_image(path, pixel_size_A=1.0)
        assert src.shape == (64, 256, 256)
        peak = _peak_bytes_while_iterating(src, chunk=4)
        assert peak < 5 * 2**20, (path.name, peak)


def test_frames_read_before_a_corrupted_frame(tmp_path: Path) -> None:
    """A damaged last frame of a compressed stack fails only when that frame is read."""
    movie = _movie(12, 32, 32, np.uint16)
    path = tmp_path / "damaged.tif"
    tifffile.imwrite(path, movie, compression="zlib", imagej=True, resolution=(10.0, 10.0),
                     metadata={"unit": "nm", "axes": "TYX"})
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[-1].dataoffsets[0], tif.pages[-1].databytecounts[0]
    raw = bytearray(path.read_bytes())
    raw[offset:offset + count] = b"\xff" * count
    path.write_bytes(bytes(raw))
    src = open_image(path)
    first, block = next(src.frames(chunk=4))
    np.testing.assert_array_equal(block, movie[:4])
    with pytest.raises(HrtemError, match=r"frames 8\.\.11 .*corrupted"):
        list(src.frames(chunk=4))
    with pytest.raises(HrtemError, match="corrupted"):
        src.read_all()


def test_uncalibrated_files_open_without_a_pixel_size_when_asked(tmp_path: Path) -> None:
    # a plain .npy and a TIFF without resolution tags carry no calibration
    npy, tif, cal = tmp_path / "movie.npy", tmp_path / "plain.tif", tmp_path / "cal.tif"
    np.save(npy, _movie(3))
    tifffile.imwrite(tif, _movie(3), photometric="minisblack")
    tifffile.imwrite(cal, _movie(3), imagej=True, resolution=(5.0, 5.0), metadata={"unit": "nm", "axes": "TYX"})
    for path in (npy, tif):
        with pytest.raises(HrtemError, match="pixel") as info:  # the default still asks for one
            open_image(path)
        assert "\n" not in str(info.value)
        src = open_image(path, require_pixel_size=False)
        assert src.pixel_size_A is None and src.pixel_size_from_file_A is None
        assert src.shape == (3, 32, 40)
        np.testing.assert_array_equal(src.read_all(), _movie(3).astype(np.float32))
    src = open_image(cal, require_pixel_size=False)  # a calibrated file keeps its calibration
    assert src.pixel_size_A == pytest.approx(2.0) and src.pixel_size_from_file_A == pytest.approx(2.0)
    absurd = tmp_path / "absurd.tif"  # 1 mm per pixel: unusable, so None, but the file's value is kept
    tifffile.imwrite(absurd, _movie(1)[0], imagej=True, resolution=(1.0, 1.0), metadata={"unit": "mm"})
    with pytest.raises(HrtemError, match="outside"):
        open_image(absurd)
    src = open_image(absurd, require_pixel_size=False)
    assert src.pixel_size_A is None and src.pixel_size_from_file_A == pytest.approx(1e7)
    with pytest.raises(HrtemError, match="does not exist"):  # other problems are still errors
        open_image(tmp_path / "missing.npy", require_pixel_size=False)


def test_npy_stack_and_image(tmp_path: Path) -> None:
    movie = _movie(7, 16, 24, np.int16)
    path = tmp_path / "movie.npy"
    np.save(path, movie)
    with pytest.raises(HrtemError, match="pixel_size_A"):
        open_image(path)
    src = open_image(path, pixel_size_A=0.08)
    assert src.shape == (7, 16, 24) and src.pixel_size_A == 0.08 and src.frame_interval_s is None
    assert [first for first, _ in src.frames(chunk=3)] == [0, 3, 6]
    np.testing.assert_array_equal(src.read_all(), movie.astype(np.float32))
    image = tmp_path / "image.npy"
    np.save(image, np.asfortranarray(movie[2]))  # Fortran order reads the same
    np.testing.assert_array_equal(open_image(image, pixel_size_A=0.08).read_all()[0], movie[2])


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros(100, np.float32), r"1D data \(100 values\)"),
    (np.zeros((16, 16), np.complex64), "complex-valued"),
    (np.zeros((2, 2, 16, 16), np.float32), r"4D dataset \(2 x 2 scan positions or planes of 16 x 16"),
    (np.array([None, 1], dtype=object), "Python objects"),
])
def test_npy_non_images_are_refused(tmp_path: Path, array, message) -> None:
    path = tmp_path / "x.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(HrtemError, match=message):
        open_image(path, pixel_size_A=1.0)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_missing_file_unknown_extension_and_directory(tmp_path: Path) -> None:
    with pytest.raises(HrtemError, match="does not exist"):
        open_image(tmp_path / "nothing.dm4")
    other = tmp_path / "picture.png"
    other.write_bytes(b"\x89PNG....")
    with pytest.raises(HrtemError, match=r"unknown file type '\.png'; supported: .*\.dm3"):
        open_image(other)
    with pytest.raises(HrtemError, match="not a file"):
        open_image(tmp_path)


TRUNCATABLE = [
    "dm/test_STEM_image.dm3", "dm/3D_test-2.dm4", "mrc/Custom_movie.mrc", "mrc/HAADFscan.mrc",
    "tia/64x64x5_TEM_preview_1.ser", "tiff/TVIPS_bin4.tif", "tiff/test_loading_image_saved_with_DM_stack.tif",
    "emd/fei_example_tem_stack.emd", "emd/Si100_2x1x1_3D.emd",
]


@needs_data
@pytest.mark.parametrize("rel", TRUNCATABLE)
@pytest.mark.parametrize("keep", [0.0, 0.02, 0.5, 0.9])
def test_truncated_real_files(tmp_path: Path, rel: str, keep: float) -> None:
    raw = (DATA / rel).read_bytes()
    path = tmp_path / Path(rel).name
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(HrtemError, match="truncated|corrupted|empty") as info:
        open_image(path, pixel_size_A=1.0, min_size=1).read_all()
    assert path.name in str(info.value) and "\n" not in str(info.value)


@needs_data
def test_truncated_ser_beside_its_emi(tmp_path: Path) -> None:
    for name in ("64x64x5_TEM_preview.emi", "64x64x5_TEM_preview_1.ser"):
        shutil.copy(DATA / "tia" / name, tmp_path / name)
    ser = tmp_path / "64x64x5_TEM_preview_1.ser"
    ser.write_bytes(ser.read_bytes()[:40000])
    for target in (tmp_path / "64x64x5_TEM_preview.emi", ser):
        with pytest.raises(HrtemError, match="truncated|corrupted"):
            open_image(target).read_all()


@needs_data
def test_hdf5_that_hangs_the_hdf5_library_is_refused(tmp_path: Path, monkeypatch) -> None:
    """Found by fuzzing: these 5 bytes make HDF5 loop for ever (in C) reading a string attribute.

    The metadata walk runs in a separate process that is stopped after HDF5_CHECK_TIMEOUT_S.
    """
    from hrtem3d.io import headers

    monkeypatch.setattr(headers, "HDF5_CHECK_TIMEOUT_S", 3.0)
    raw = bytearray((DATA / "emd/example_image.emd").read_bytes())
    raw[2400] = 0o202
    raw[5654:5658] = b"\x7f\xff\xff\xff"
    path = tmp_path / "hangs.emd"
    path.write_bytes(bytes(raw))
    with pytest.raises(HrtemError, match="did not finish in 3 s.*corrupted"):
        open_image(path, pixel_size_A=1.0, min_size=1)


def test_nan_in_a_movie_frame_and_in_a_single_image(tmp_path: Path) -> None:
    movie = _movie(4, 16, 16)
    movie[2, 3, 4] = np.nan
    path = tmp_path / "nan.npy"
    np.save(path, movie)
    src = open_image(path, pixel_size_A=1.0)  # a movie opens; its frames are checked one by one
    with pytest.raises(HrtemError, match=r"frame 2 holds 1 NaN/Inf"):
        src.read_all()
    bad = [first + k for first, block in src.frames(chunk=3) for k in range(block.shape[0])
           if not np.isfinite(block[k]).all()]
    assert bad == [2]
    image = tmp_path / "inf.tif"
    tifffile.imwrite(image, np.where(np.eye(16) > 0, np.inf, 1.0).astype(np.float32))
    with pytest.raises(HrtemError, match=r"frame 0 holds 16 NaN/Inf"):
        open_image(image, pixel_size_A=1.0)


def test_check_finite() -> None:
    check_finite(np.zeros((4, 4), np.float32), 0)
    check_finite(np.full((4, 4), 7, np.int32), 3)
    with pytest.raises(HrtemError, match=r"movie.ser: frame 12 holds 2 NaN/Inf pixel value\(s\) out of 16"):
        check_finite(np.array([[np.nan, np.inf]] + [[0, 0]] * 7, np.float64), 12, "movie.ser")


def _write_npy_header(path: Path, shape: tuple[int, ...], payload: bytes = b"\0" * 64) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(payload)


@pytest.mark.parametrize(("shape", "message"), [
    ((3, 70000, 70000), "beyond the limits"),
    ((100000, 8), "beyond the limits"),
    ((2, 60000, 40000), "beyond the limits"),  # 2.4e9 pixels in a frame
    ((4, 2000, 2000), "declares 64000000 bytes of pixel data but the file holds only 64 bytes"),
    ((0, 16, 16), "holds no pixels"),
])
def test_npy_absurd_declared_sizes(tmp_path: Path, shape, message) -> None:
    path = tmp_path / "absurd.npy"
    _write_npy_header(path, shape)
    with pytest.raises(HrtemError, match=message):
        open_image(path, pixel_size_A=1.0)


def _patch_ifd0_tag(path: Path, tag: int, value: int) -> None:
    """Set a tag of the first IFD of a little-endian classic TIFF to a LONG value."""
    raw = bytearray(path.read_bytes())
    assert raw[:4] == b"II*\0"
    (ifd,) = struct.unpack_from("<I", raw, 4)
    (count,) = struct.unpack_from("<H", raw, ifd)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", raw, entry)[0] == tag:
            struct.pack_into("<HHII", raw, entry, tag, 4, 1, value)
            path.write_bytes(bytes(raw))
            return
    raise AssertionError(f"tag {tag} not found")


@pytest.mark.parametrize(("width", "message"), [(70000, "beyond the limits"), (40000, "truncated")])
def test_tiff_absurd_declared_sizes(tmp_path: Path, width: int, message: str) -> None:
    path = tmp_path / "absurd.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8), metadata=None)
    _patch_ifd0_tag(path, 256, width)  # ImageWidth
    _patch_ifd0_tag(path, 257, 40000)  # ImageLength
    with pytest.raises(HrtemError, match=message):
        open_image(path, pixel_size_A=1.0)


@needs_data
@pytest.mark.parametrize(("nx", "message"), [(100000, "beyond the limits"), (5000, "truncated")])
def test_mrc_absurd_declared_sizes(tmp_path: Path, nx: int, message: str) -> None:
    path = tmp_path / "movie.mrc"
    raw = bytearray((DATA / "mrc/Custom_movie.mrc").read_bytes())
    struct.pack_into("<i", raw, 0, nx)  # NX
    path.write_bytes(bytes(raw))
    with pytest.raises(HrtemError, match=message):
        open_image(path, pixel_size_A=1.0)


@needs_data
def test_min_size_is_a_parameter() -> None:
    with pytest.raises(HrtemError, match=r"only 2 x 2 pixels; at least 8 x 8"):
        open_image(DATA / "dm/2D_test-2.dm4", pixel_size_A=1.0)
    with pytest.raises(HrtemError, match=r"at least 100 x 100"):
        open_image(DATA / "dm/test_STEM_image.dm3", min_size=100)
    assert open_image(DATA / "dm/2D_test-2.dm4", pixel_size_A=1.0, min_size=1).shape == (1, 2, 2)


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), 1000, 1e-5, "abc", None, ""])
def test_validate_pixel_size_refuses(value) -> None:
    with pytest.raises(HrtemError, match="pixel_size_A") as info:
        validate_pixel_size(value)
    assert "\n" not in str(info.value)


def test_validate_pixel_size_accepts_and_open_image_uses_it(tmp_path: Path) -> None:
    assert validate_pixel_size("0.5") == 0.5
    assert validate_pixel_size(0.001) == 0.001 and validate_pixel_size(100) == 100.0
    path = tmp_path / "a.npy"
    np.save(path, _movie(1)[0])
    with pytest.raises(HrtemError, match="pixel_size_A"):
        open_image(path, pixel_size_A=-0.1)


@pytest.mark.parametrize(("scale", "unit", "expected"), [
    (1e-10, "m", 1.0), (1e-4, "µm", 1.0), (1e-4, "\u03bcm", 1.0), (1e-4, "um", 1.0), (1e-4, "micron", 1.0),
    (0.1, "nm", 1.0), (100.0, "pm", 1.0), (1.0, "Å", 1.0), (1.0, "\u212b", 1.0), (2.0, "A", 2.0),
    (1e-7, "mm", 1.0), (1.0, "1/nm", None), (1.0, "1 / µm", None), (1.0, "eV", None), (1.0, None, None),
])
def test_length_units(scale, unit, expected) -> None:
    got = length_to_A(scale, unit)
    if expected is None:
        assert got is None
    else:
        assert math.isclose(got, expected, rel_tol=1e-12)
