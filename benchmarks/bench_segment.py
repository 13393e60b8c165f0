"""`segment` end to end on a 1024x1024 frame at 0.08 Å/px against one forward pass of the plain
reference U-Net (16-32-64-128, two 3x3 conv+BN+ReLU per level, 12 classes) on the same frame.

End to end = read the TIFF, normalise, resample to the model's pixel size, network, columns
(figures and file writing excluded). Prints a markdown table with the ratio.

    .venv/bin/python benchmarks/bench_segment.py [--model M.safetensors] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch


def median_time(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from hrtem3d.io import open_image
    from hrtem3d.model.unet import count_flops, count_parameters, plain_unet_reference
    from hrtem3d.segmentation.segmenter import Segmenter

    rng = np.random.default_rng(0)
    frame = rng.poisson(64, (1024, 1024)).astype(np.uint16)
    path = Path(tempfile.mkdtemp()) / "frame.tif"
    tifffile.imwrite(path, frame)

    ref = plain_unet_reference().eval()
    x = torch.from_numpy(frame.astype(np.float32))[None, None]
    with torch.inference_mode():
        t_ref = median_time(lambda: ref(x), a.repeats)

    seg = Segmenter(a.model, contrast="bright")

    def end_to_end():
        src = open_image(path, pixel_size_A=0.08)
        img = next(src.frames())[1][0]
        return seg.segment(img, src.pixel_size_A)

    t_seg = median_time(end_to_end, a.repeats)
    work = 1024 * 0.08 / seg.pixel_size_A
    n = int(round(work))
    flops = count_flops(seg.model, (1, 1, n, n))
    print(f"model: {a.model or 'shipped default'}; working pixel {seg.pixel_size_A} Å -> {n}² network input; "
          f"{count_parameters(seg.model):,} parameters, {flops / 1e9:.2f} GFLOP per frame")
    print(f"reference: {count_parameters(ref):,} parameters, {count_flops(ref, (1, 1, 1024, 1024)) / 1e9:.2f} GFLOP")
    print("| step | seconds | ratio to reference forward | frames/s |")
    print("| --- | --- | --- | --- |")
    print(f"| reference plain U-Net forward, 1024² | {t_ref:.3f} | 1.00 | {1 / t_ref:.1f} |")
    print(f"| hrtem3d segment end to end, 1024² at 0.08 Å | {t_seg:.3f} | {t_seg / t_ref:.2f} | {1 / t_seg:.1f} |")


if __name__ == "__main__":
    main()
