"""Segment one image: normalise, resample to the model's pixel size, run the U-Net, read columns.

`Segmenter` holds a loaded model; `segment(image, pixel_size_A)` returns the column
table (DESIGN.md), a label image and a confidence image on the input's own grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from hrtem3d.contracts import COLUMN_FIELDS
from hrtem3d.data.dihedral import dihedral, dihedral_inverse
from hrtem3d.data.normalize import noise_level, normalizer
from hrtem3d.data.resample import to_input_coords, to_working_grid
from hrtem3d.errors import HrtemError
from hrtem3d.labels.scheme import ClassScheme
from hrtem3d.model.io import load_default_model, load_model
from hrtem3d.model.runtime import make_engine
from hrtem3d.model.unet import fix_lattice, pick_device, seam_free_overlap
from hrtem3d.segmentation.columns import disc_offsets, find_columns
from hrtem3d.segmentation.confidence import apply_gates_map, calibrate_columns, map_terms, uses_ratio
from hrtem3d.segmentation.envelope_check import check_envelope, count_size_ratio
from hrtem3d.segmentation.gain import ContrastRead, cap_at_estimated_gain, estimate_gain, parse_gain
from hrtem3d.segmentation.route import READINGS, SHIPPED_READING, LatticeRoute, vibrating_model_path
from hrtem3d.segmentation.vacuum import VACUUM_MARGIN_A, particle_regions

TABLE_FIELDS = COLUMN_FIELDS  # the column table's fields (hrtem3d.contracts)
# extra fields follow: p_column (column probability at the centre), p_<class> (pooled class probabilities),
# intensity (mean normalised image within 0.4 Å of the centre, at the model's pixel size)


@dataclass
class Segmentation:
    """Result for one frame: the column table, and per-pixel maps on the input grid made when first asked for.

    Attributes:
        columns: the column table.
        working_image: the normalised image at the model's pixel size.
        probs: float32 `[C, y, x]` class probabilities at the model's pixel size.
        input_shape: the input image's `(ny, nx)`.
        labels: uint8 `[y, x]` class per input pixel (0 background), nearest of the working grid.
        confidence: float32 `[y, x]` probability of that class, bilinear from the working grid.
        contrast_gain: the gain the normalised image was multiplied by (`segmentation.gain`; 1: none).
        lattice: the reading used ("static" or "vibrating"; None for a model of one reading but the shipped one).
        p_vibrating: the vibration gate's p(vibrating) when it decided the reading (a routed segmenter), else None.
        contrast_loss: the contrast gate's reading of g when it was asked (`--contrast-gain auto`), else None.
        contrast_spread: the spread (sigma of log g) of that reading, else None.
        gates_map: whether the gates' confidence map (`confidence.apply_gates_map`) set the confidence (counts
            at gain 1 that the contrast gate read).
    """

    columns: pd.DataFrame
    working_image: np.ndarray
    probs: np.ndarray
    input_shape: tuple[int, int]
    contrast_gain: float = 1.0
    lattice: str | None = None
    p_vibrating: float | None = None
    contrast_loss: float | None = None
    contrast_spread: float | None = None
    gates_map: bool = False
    _labels: np.ndarray | None = field(default=None, repr=False)
    _confidence: np.ndarray | None = field(default=None, repr=False)

    @property
    def contrast_read(self) -> tuple[float, float] | None:
        """The contrast gate's (g, sigma) when it was asked (what a movie's later frames hold), else None."""
        return (self.contrast_loss, self.contrast_spread) if self.contrast_loss is not None else None

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            self._labels = to_input_grid(self.probs.argmax(0).astype(np.uint8), self.input_shape, order=0)
        return self._labels

    @property
    def confidence(self) -> np.ndarray:
        if self._confidence is None:
            self._confidence = to_input_grid(self.probs.max(0), self.input_shape, order=1)
        return self._confidence

    @confidence.setter
    def confidence(self, value: np.ndarray) -> None:
        self._confidence = value


def to_input_grid(m: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    """A working-grid map `[y, x]` resampled to `shape`: nearest neighbour (order 0, same dtype) or
    bilinear (order 1, float32), pixel centres aligned as `skimage.transform.resize` aligns them."""
    if m.shape == tuple(shape):
        return m.astype(np.float32) if order else m
    if order == 0:
        iy = np.minimum(((np.arange(shape[0]) + 0.5) * m.shape[0] / shape[0]).astype(int), m.shape[0] - 1)
        ix = np.minimum(((np.arange(shape[1]) + 0.5) * m.shape[1] / shape[1]).astype(int), m.shape[1] - 1)
        return m[iy[:, None], ix[None, :]]
    t = torch.from_numpy(np.ascontiguousarray(m, np.float32))[None, None]
    return F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False)[0, 0].numpy()


def column_intensity(work: np.ndarray, x: np.ndarray, y: np.ndarray, radius_px: float) -> np.ndarray:
    """Mean of the normalised working image within `radius_px` of each column centre (working pixels)."""
    if len(x) == 0:
        return np.zeros(0, np.float32)
    dy, dx = disc_offsets(radius_px)
    yy = np.clip(np.rint(y)[:, None].astype(int) + dy[None], 0, work.shape[0] - 1)
    xx = np.clip(np.rint(x)[:, None].astype(int) + dx[None], 0, work.shape[1] - 1)
    return work[yy, xx].mean(1).astype(np.float32)


class Segmenter:
    """A loaded model and its settings.

    Args:
        model_path: a `*.safetensors` model; None uses the model shipped with hrtem3d; or a
            `(network, metadata)` pair already in memory (a torch module giving class logits
            `[B, C, y, x]`, and the metadata a model file holds: at least `scheme` and `pixel_size_A`).
        device: "cpu" or "cuda" (default: CUDA when present).
        tile: largest working-grid tile side (pixels); larger images are tiled.
        overlap: tile overlap (working pixels); None takes the network's receptive radius rounded up to
            its pooling grid (`seam_free_overlap`: 144 for the shipped model), so seams change nothing.
        contrast: "bright" (as recorded: raw counts have the polarity of training; the default), "dark"
            (inverted), or "auto" (decided on the first image segmented after `set_contrast`; callers reset
            it for every new input; for processed images of unknown polarity).
        threads: torch CPU threads (None: torch's default).
        compile: run the network through `torch.compile` (a compile of up to a minute on the
            first frame of each new size; the "torch" backend only).
        backend: how the network runs (`hrtem3d.model.runtime`): "auto" (ONNX Runtime on the CPU,
            PyTorch on CUDA), "onnx", "torch", or "int8" (quantised, its scales
            calibrated on the first image segmented; opt-in, see docs/benchmarks.md).
        tta: test-time augmentation, the number of the square's symmetries (1, 2, 4 or 8) whose
            class probabilities are averaged; costs that many forward passes.
        skip_vacuum: run the network only on boxes around what is not vacuum (`segmentation.vacuum`),
            grown by `vacuum_margin` working pixels; the rest of the frame is background.
        vacuum_margin: context kept around the particle (working pixels); None takes
            `VACUUM_MARGIN_A` (10 Å, 64 pixels for the shipped model), at most the seam-free overlap.
        lattice: for a model with lattice heads (`UNetConfig.lattice_heads`), which reading to use:
            "static" (a lattice at rest, as in simulations without frozen phonons), "vibrating" (thermal
            diffuse scattering, as in every real specimen) or "auto" (the network's own image-level
            guess mixes both); None takes the model file's `default_lattice`, else "auto". The confidence
            map and detection thresholds fitted for that reading (`calibration_by_lattice`) are used.
            For the shipped model (`model_path` None) the readings are two networks: "static" (the shipped
            model alone), "vibrating" (`weights/vibrating.safetensors`) or "auto" (the default,
            `SHIPPED_READING`: each image routed by the shipped vibration gate, `segmentation.route`).
        contrast_gain: how many times lower the image's lattice contrast is than the simulation's (the
            Stobbs factor; the normalised image is multiplied by it), or "auto": the shipped contrast gate's
            reading of the whole image when it is sure the contrast is lower (`segmentation.gain.ContrastRead`,
            one encoder pass), else 1 unless the particle's counts read thinner than its size allows, then
            estimated from the particle (`segmentation.gain.estimate_gain`, a few more forward passes), for
            each image on its own (`segment(..., gain=)` holds one for the frames of a movie); counts made at
            an estimated gain have their confidence capped at `GAIN_CONFIDENCE_CAP` (0.5).
    """

    def __init__(self, model_path: str | Path | None = None, device: str | None = None, tile: int = 1024,
                 overlap: int | None = None, contrast: str = "bright", threads: int | None = None,
                 compile: bool = False, tta: int = 1, backend: str = "auto", skip_vacuum: bool = True,
                 vacuum_margin: int | None = None, lattice: str | None = None,
                 contrast_gain: float | str = "auto"):
        if tta not in (1, 2, 4, 8):
            raise HrtemError(f"tta must be 1, 2, 4 or 8 (flips/rotations averaged), got {tta}", param="tta")
        self.tta = tta
        self.device = pick_device(device)
        if threads:
            torch.set_num_threads(threads)
        shipped = model_path is None  # the shipped pair: the static reader, or the vibrating one, or routed
        if shipped:
            lattice = lattice or SHIPPED_READING
            if lattice not in READINGS:
                raise HrtemError(f"lattice must be one of {', '.join(READINGS)}, got {lattice!r}", param="lattice")
            if lattice == "vibrating":
                model_path = vibrating_model_path()
        self.model, self.meta = _load(model_path, self.device)
        self.lattice = lattice or self.meta.get("default_lattice", "auto")
        self.lattice_heads = bool(getattr(getattr(self.model, "config", None), "lattice_heads", False))
        if self.lattice_heads or not shipped:
            self.model = fix_lattice(self.model, self.lattice).eval()
        self.shipped = shipped
        self.contrast_read: ContrastRead | None = None  # loaded when "auto" first needs it
        self.use_contrast_gate = True
        self.use_gates_map = True  # the contrast gate's confidence map (`confidence.apply_gates_map`), shipped readers
        self.route, self.vibrating = None, None
        if shipped and self.lattice == "auto":
            self.route = LatticeRoute.shipped(self.device)
            self.vibrating = Segmenter(None, device=device, tile=tile, overlap=overlap, contrast=contrast,
                                       threads=threads, compile=compile, tta=tta, backend=backend,
                                       skip_vacuum=skip_vacuum, vacuum_margin=vacuum_margin, lattice="vibrating",
                                       contrast_gain=contrast_gain)
        self.scheme = ClassScheme.from_dict(self.meta["scheme"])
        self.pixel_size_A = float(self.meta["pixel_size_A"])
        self.temperature = float(self.meta.get("temperature", 1.0))
        own = self.meta.get("calibration_by_lattice", {}).get(self.lattice, {})
        self.calibration = own.get("column_calibration", self.meta.get("column_calibration"))
        self.normalize = normalizer(self.meta.get("normalization", "median/MAD"))
        cw = self.meta.get("class_weights")  # the loss weights, whose bias find_columns undoes
        self.class_weights = np.asarray(cw, np.float32) if cw is not None else None
        # per-species column probability, or None
        self.detection = own.get("detection_threshold", self.meta.get("detection_threshold"))
        if overlap is None:  # an in-memory network other than the U-Net: a generous fixed margin
            config = getattr(self.model, "config", None)
            overlap = seam_free_overlap(config) if config is not None else 144
        self.overlap = overlap
        if tile - 2 * self.overlap < 1:
            raise HrtemError(f"tile {tile} must exceed twice the overlap {self.overlap} (working pixels)",
                             param="tile")
        self.tile = tile
        self.skip_vacuum = skip_vacuum
        self.multiple = getattr(getattr(self.model, "config", None), "multiple", 16)
        if vacuum_margin is None:
            m = self.multiple
            vacuum_margin = min(self.overlap, -(-int(round(VACUUM_MARGIN_A / self.pixel_size_A)) // m) * m)
        self.vacuum_margin = vacuum_margin
        try:
            self.contrast_gain = parse_gain(contrast_gain)
        except ValueError as e:
            raise HrtemError(str(e), param="contrast_gain") from None
        self.set_contrast(contrast)
        self._engine_args = dict(device=self.device, threads=threads, compile=compile)
        float_engine = make_engine(self.model, backend="auto" if backend == "int8" else backend, **self._engine_args)
        self._polarity_engine = float_engine  # int8 quantises later, on the first image it sees
        self.engine = None if backend == "int8" else float_engine
        self.backend = float_engine.backend if self.engine is not None else "int8"

    @property
    def lattice_reading(self) -> str | None:
        """The reading in use ("static", "vibrating" or "auto") of a model with lattice heads or of the shipped
        pair ("auto": routed per input by the vibration gate); None for other models."""
        return self.lattice if self.lattice_heads or self.shipped else None

    def set_contrast(self, contrast: str, gain: float | str | None = None) -> None:
        """Atom contrast from now on: "bright", "dark", or "auto" (decided afresh on the next image);
        with `gain`, the contrast gain too (a number >= 1, or "auto"; see the class).

        Call it at the start of every new input: an "auto" decision holds for all frames of one
        input (a movie keeps its polarity) and must not leak into the next file.
        """
        if gain is not None:
            try:
                self.contrast_gain = parse_gain(gain)
            except ValueError as e:
                raise HrtemError(str(e), param="contrast_gain") from None
        if contrast not in ("bright", "dark", "auto"):
            raise HrtemError(f"contrast must be bright, dark or auto, got {contrast!r}", param="contrast")
        self.contrast = contrast
        self._sign = {"bright": 1.0, "dark": -1.0}.get(contrast)
        if getattr(self, "vibrating", None) is not None:
            self.vibrating.set_contrast(contrast, gain)

    @torch.inference_mode()
    def probabilities(self, work: np.ndarray, regions: list[tuple[int, int, int, int]] | None = None) -> np.ndarray:
        """Class probabilities `[C, y, x]` of a normalised working-grid image, tiled with overlap.

        `regions`: boxes `(y0, y1, x0, x1)` (working pixels, on the pooling grid) where the network runs;
        elsewhere the probabilities are background's (1 for class 0). None: the whole image.
        """
        ny, nx = work.shape
        if regions is not None and list(regions) != [(0, ny, 0, nx)]:
            out = np.zeros((self.scheme.n_classes, ny, nx), np.float32)
            out[0] = 1
            for y0, y1, x0, x1 in regions:
                out[:, y0:y1, x0:x1] = self.probabilities(work[y0:y1, x0:x1])
            return out
        if max(ny, nx) <= self.tile:
            return self._forward(work)
        out = np.zeros((self.scheme.n_classes, ny, nx), np.float32)
        step = self.tile - 2 * self.overlap
        for y0 in range(0, ny, step):
            for x0 in range(0, nx, step):
                ya, xa = max(0, y0 - self.overlap), max(0, x0 - self.overlap)
                yb, xb = min(ny, y0 + step + self.overlap), min(nx, x0 + step + self.overlap)
                p = self._forward(work[ya:yb, xa:xb])
                ys, xs = slice(y0, min(ny, y0 + step)), slice(x0, min(nx, x0 + step))
                out[:, ys, xs] = p[:, y0 - ya:y0 - ya + (ys.stop - y0), x0 - xa:x0 - xa + (xs.stop - x0)]
        return out

    @torch.inference_mode()
    def _forward(self, work: np.ndarray, engine=None) -> np.ndarray:
        if engine is None and self.engine is None:  # int8: scales from the first image's activations
            self.engine = make_engine(self.model, backend="int8", calibration=[work], **self._engine_args)
        engine = engine or self.engine
        x = torch.from_numpy(np.ascontiguousarray(work, dtype=np.float32))[None, None]
        if self.tta == 1:
            return torch.softmax(engine(x)[0] / self.temperature, 0).numpy()
        p = 0
        for t in range(self.tta):  # the training augmentations: rotations by 90 degrees, then flips
            logits = dihedral_inverse(engine(dihedral(x, t).contiguous()), t).contiguous()
            p = p + torch.softmax(logits / self.temperature, 1)
        return (p[0] / self.tta).numpy()

    def polarity(self, work: np.ndarray, centre: tuple[int, int] | None = None) -> float:
        """+1 if atoms are bright as in training, -1 if dark (decided on a crop about `centre`, `(y, x)`
        working pixels; default the image's centre)."""
        if self._sign is not None:
            return self._sign
        ny, nx = work.shape
        s = min(256, ny, nx)
        cy, cx = centre or (ny // 2, nx // 2)
        y0, x0 = min(max(0, cy - s // 2), ny - s), min(max(0, cx - s // 2), nx - s)
        crop = work[y0:y0 + s, x0:x0 + s]
        score = []
        for sign in (1.0, -1.0):
            p = self._forward(sign * crop, self._polarity_engine)
            fg = 1 - p[0]
            score.append(float(np.mean(p.max(0)[fg > 0.5])) if (fg > 0.5).any() else 0.0)
        self._sign = 1.0 if score[0] >= score[1] else -1.0
        return self._sign

    def segment(self, image: np.ndarray, pixel_size_A: float, frame: int = 0, *,
                gain: float | None = None, lattice: str | None = None,
                contrast_read: tuple[float, float] | None = None) -> Segmentation:
        """Segment one image `[y, x]` with pixel size `pixel_size_A` (Å); `gain` overrides the segmenter's
        `contrast_gain` for this image (the frames of a movie keep the gain decided on its first); `lattice`
        ("static" or "vibrating") overrides the gate of a routed segmenter (the frames of a movie keep the
        reading decided on its first); `contrast_read`, the contrast gate's (g, sigma) of a movie's first frame,
        is held with its gain, so that every frame's confidence goes through the gates' map as the first
        frame's did. The result's `lattice` and `p_vibrating` say which reading was used."""
        image = np.asarray(image)
        if image.ndim != 2:
            raise HrtemError(f"expected one 2D image, got shape {image.shape}")
        if not np.isfinite(image).all():
            raise HrtemError(f"frame {frame} holds NaN or Inf values; fix or drop it")
        if not 0.005 <= pixel_size_A <= 2.0:
            raise HrtemError(f"pixel size {pixel_size_A} Å is outside 0.005..2 Å; check the calibration or "
                             "give `pixel_size_A`", param="pixel_size_A")
        sign = 1.0 if self.contrast != "dark" else -1.0
        loss, sigma = contrast_read if contrast_read is not None else (None, None)
        start = 1.0
        if gain is None and self.contrast_gain == "auto" and self.use_contrast_gate:
            loss, sigma = self._contrast_gate().read(image, pixel_size_A, sign)
            read = self.contrast_read.decide(loss, sigma)
            if read is not None and check_envelope(image, pixel_size_A).in_envelope:
                start = read  # taken only where the gate saw a CeO2 [110] lattice (not a bare film, another material)
        if self.route is not None:
            p = None
            if lattice is None:
                p = self.route.p_vibrating(image, pixel_size_A, sign)
                lattice = self.route.reading(p)
            if lattice not in ("static", "vibrating"):
                raise HrtemError(f"a routed image is read as static or vibrating, got {lattice!r}", param="lattice")
            reader = self.vibrating if lattice == "vibrating" else self
            r = reader._segment_gain(image, pixel_size_A, frame, gain, start)
            r.lattice, r.p_vibrating = lattice, p
        else:
            r = self._segment_gain(image, pixel_size_A, frame, gain, start)
            r.lattice = self.lattice_reading
        r.contrast_loss, r.contrast_spread = loss, sigma
        # the gates' map was fitted for the shipped readers (a model of your own has its own map, `calibrate`)
        cmap = self._contrast_gate().confidence_map if loss is not None and self.use_gates_map else None
        if cmap and self.shipped and r.contrast_gain == 1:  # counts at gain 1 the gate read: what they are worth
            r.gates_map = True
            p = r.p_vibrating  # None where the reading was given: no doubt about it
            other = 0.0 if p is None else (p if r.lattice == "static" else 1.0 - p)
            if len(r.columns):
                r.columns = apply_gates_map(r.columns, cmap, loss, sigma, r.contrast_gain, other)
        return r

    def _contrast_gate(self) -> ContrastRead:
        """The shipped contrast gate, loaded when first needed."""
        if self.contrast_read is None:
            self.contrast_read = ContrastRead.shipped(self.device)
        return self.contrast_read

    def _segment_gain(self, image: np.ndarray, pixel_size_A: float, frame: int, gain: float | None,
                      start: float = 1.0) -> Segmentation:
        """At `gain`, or (None, "auto") at the gain the particle's counts ask for from `start` up (the contrast
        gate's reading, or 1); counts at an estimated gain have their confidence capped."""
        if gain is None and self.contrast_gain != "auto":
            gain = float(self.contrast_gain)
        if gain is not None:
            return self._segment(image, pixel_size_A, frame, float(gain))
        done: dict[float, Segmentation] = {}

        def ratio_at(gain: float) -> float:
            done[gain] = self._segment(image, pixel_size_A, frame, gain)
            return count_size_ratio(done[gain].columns)

        best = estimate_gain(ratio_at, start=start)
        r = done.get(best) or self._segment(image, pixel_size_A, frame, best)
        if best > 1:  # counts that rest on an estimated contrast scale
            r.columns = cap_at_estimated_gain(r.columns)
        return r

    def _segment(self, image: np.ndarray, pixel_size_A: float, frame: int, gain: float) -> Segmentation:
        work, factors = to_working_grid(image.astype(np.float32), pixel_size_A, self.pixel_size_A)
        work = self.normalize(work)
        if gain != 1:
            work = work * np.float32(gain)
        regions = None
        if self.skip_vacuum:
            regions = particle_regions(image, pixel_size_A, margin_px=self.vacuum_margin, multiple=self.multiple,
                                       factors=factors, shape=work.shape)
        big = max(regions, key=lambda b: (b[1] - b[0]) * (b[3] - b[2])) if regions else None
        work = self.polarity(work, ((big[0] + big[1]) // 2, (big[2] + big[3]) // 2) if big else None) * work
        probs = self.probabilities(work, regions)
        # columns are looked for only where the network ran (the boxes' bounding box): elsewhere is background
        y0, y1, x0, x1 = _bounding_box(regions, work.shape)
        cols = find_columns(probs[:, y0:y1, x0:x1], self.scheme, self.pixel_size_A, class_weights=self.class_weights)
        cols["x_px"], cols["y_px"] = cols["x_px"] + x0, cols["y_px"] + y0
        if self.detection and len(cols):
            need = cols["species"].map({s: self.detection.get(s, 0.0) for s in self.scheme.species}).fillna(0.0)
            cols = cols[cols["p_column"] >= need].reset_index(drop=True)
        if self.calibration and len(cols):
            ratio = float("nan")
            if uses_ratio(map_terms(self.calibration)[1]):  # a map fitted with the shift features
                ratio = count_size_ratio(cols.assign(x_A=cols.x_px * self.pixel_size_A,
                                                     y_A=cols.y_px * self.pixel_size_A))
            cols["confidence"] = calibrate_columns(cols["confidence"].to_numpy(), self.calibration, noise_level(work),
                                                   ratio, n_atoms=cols["n_atoms"].to_numpy(),
                                                   cation=(cols["species"] == self.scheme.species[0]).to_numpy())
        cols["intensity"] = column_intensity(work, cols["x_px"].to_numpy(), cols["y_px"].to_numpy(),
                                             0.4 / self.pixel_size_A)
        x_in, y_in = to_input_coords(cols["x_px"].to_numpy(), cols["y_px"].to_numpy(), factors)
        cols["x_px"], cols["y_px"] = x_in, y_in
        cols.insert(0, "frame", frame)
        cols.insert(1, "column_id", np.arange(len(cols)))
        cols["x_A"] = cols["x_px"] * pixel_size_A
        cols["y_A"] = cols["y_px"] * pixel_size_A
        cols = cols[TABLE_FIELDS + [c for c in cols.columns if c not in TABLE_FIELDS]]
        return Segmentation(cols, work, probs, image.shape, contrast_gain=gain)


def _bounding_box(regions: list | None, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) holding every box of `regions`; the whole `shape` when there are none."""
    if not regions:
        return 0, shape[0], 0, shape[1]
    b = np.asarray(regions)
    return int(b[:, 0].min()), int(b[:, 1].max()), int(b[:, 2].min()), int(b[:, 3].max())


def _load(model, device) -> tuple[torch.nn.Module, dict]:
    """(network, metadata) from a model file, None (the shipped model) or an in-memory pair."""
    if model is None:
        return load_default_model(device)
    if isinstance(model, (str, Path)):
        return load_model(model, device)
    try:
        net, meta = model
    except (TypeError, ValueError):
        raise HrtemError(f"a model is a .safetensors path or a (network, metadata) pair, got {type(model).__name__}"
                         ) from None
    if not isinstance(net, torch.nn.Module) or not isinstance(meta, dict):
        raise HrtemError("an in-memory model is a (torch.nn.Module, metadata dict) pair")
    missing = [k for k in ("scheme", "pixel_size_A") if k not in meta]
    if missing:
        raise HrtemError(f"the model's metadata lacks {', '.join(missing)}; pass the metadata a model file holds "
                         "(hrtem3d.model.read_metadata) or at least its class scheme and pixel size (Å)")
    return net.to(pick_device(device)), meta
