"""The robustness benchmark's fixed plain baseline: a 4-level U-Net on per-image standardised input.

Recipe (kept fixed so comparisons repeat): `hrtem3d.model.unet.UNet` with filters 16-32-64-128, two
3x3 conv + BatchNorm + ReLU per level, bilinear upsampling, one class per (species, atom count) of the
store's scheme; input (x - mean) / std over the whole working image (training: the crop); samples from
`HrtemDataset` (training's optics envelope, doses 100..10000 e/Å², flips/rotations) of a store made by
`hrtem3d simulate`; loss `soft_weighted_ce` with class weights (median/count)^0.5; AdamW (lr 2e-3,
weight decay 1e-4), batch 16 of 128 x 128 crops, 50 warm-up steps then a cosine decay over the wall-time
budget `--minutes`; softmax temperature fitted on held-out structures. The model file records
normalization "mean/std", which `Segmenter` learns through `ensure_normalization` until
`hrtem3d.data.normalize` knows that name.

    .venv/bin/python benchmarks/plain_unet.py /work/data/train.zarr --out plain.safetensors --minutes 25
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

STANDARD = "mean/std"
WIDTHS = (16, 32, 64, 128)


def standardize(image: np.ndarray, subsample: int = 1) -> np.ndarray:
    """(x - mean) / std over the whole image (every `subsample`-th pixel estimates them); std 0 -> 1."""
    image = np.asarray(image, dtype=np.float32)
    s = image[::subsample, ::subsample]
    sd = float(s.std())
    return (image - np.float32(s.mean())) / np.float32(sd if sd > 0 and np.isfinite(sd) else 1.0)


def ensure_normalization(name: str | None) -> None:
    """Let `Segmenter` load models whose metadata names `STANDARD` while hrtem3d does not know it (a shim
    for this process only: `hrtem3d segment` itself still refuses such a model)."""
    from hrtem3d.data import normalize

    try:
        normalize.normalizer(name)
        return
    except ValueError:
        if name != STANDARD:
            raise
    from hrtem3d.segment import segmenter as seg

    known = normalize.normalizer
    seg.normalizer = lambda n: standardize if n == STANDARD else known(n)
    warnings.warn(f"hrtem3d does not know normalization {STANDARD!r}; registered it for this process only",
                  stacklevel=2)


def standardised_dataset(*args, **kwargs):
    """An `HrtemDataset` whose images are standardised (`standardize`) instead of normalised."""
    from hrtem3d.data.dataset import HrtemDataset
    from hrtem3d.labels import weight_map

    class StandardisedDataset(HrtemDataset):
        def __getitem__(self, i):
            d = self.draw(i)
            w = weight_map(d["alpha"], d["cls"], self.class_weights, self.centre_weight)
            target = np.stack([d["cls"].astype(np.float32), d["alpha"]])
            return (torch.from_numpy(np.ascontiguousarray(standardize(d["counts"])[None])),
                    torch.from_numpy(np.ascontiguousarray(target)), torch.from_numpy(np.ascontiguousarray(w)))

    return StandardisedDataset(*args, **kwargs)


def train_plain(data: str | Path, out: str | Path, minutes: float, batch: int = 16, crop: int = 128,
                lr: float = 2e-3, seed: int = 0, threads: int = 2, workers: int = 1,
                max_structures: int | None = None, progress: bool = True) -> dict:
    """Train the plain baseline on the store `data` for `minutes` of wall time; write `out` (safetensors).

    Returns the final validation metrics (column-core pixel accuracy `col_acc`, background `bg_acc`).
    """
    from torch.utils.data import DataLoader

    from hrtem3d.data import store
    from hrtem3d.labels import ClassScheme, class_weights_from_counts
    from hrtem3d.model.io import save_model
    from hrtem3d.model.unet import UNet, UNetConfig
    from hrtem3d.train.loop import class_counts, fit_temperature, split_structures, validate
    from hrtem3d.train.loss import soft_weighted_ce

    torch.set_num_threads(threads)
    root = store.open_store(data)
    settings = store.settings_of(root)
    scheme = ClassScheme.from_dict(settings["scheme"])
    done = sorted(store.completed(root))[:max_structures]
    train_idx, val_idx = split_structures(done, 0.1)
    cw = class_weights_from_counts(class_counts(root, train_idx, scheme), 0.5)
    train_ds = standardised_dataset(data, train_idx, crop=crop, samples_per_epoch=batch * 200, seed=seed * 1000,
                                    class_weights=cw)
    val_ds = standardised_dataset(data, val_idx, crop=crop, samples_per_epoch=32, seed=10**6 + seed, augment=False)
    torch.manual_seed(seed)
    model = UNet(UNetConfig(n_classes=scheme.n_classes, widths=WIDTHS, convs_per_level=2, norm="batch"))
    model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    budget, warmup = minutes * 60.0, 50
    t0, step, epoch, history = time.time(), 0, 0, []
    while time.time() - t0 < budget:
        train_ds.set_epoch(epoch)
        for x, target, w in DataLoader(train_ds, batch_size=batch, num_workers=workers):
            frac = min((time.time() - t0) / budget, 1.0)
            f = (step + 1) / warmup if step < warmup else 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac))
            for g in opt.param_groups:
                g["lr"] = lr * f
            model.train()
            loss = soft_weighted_ce(model(x.contiguous(memory_format=torch.channels_last)), target, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            if progress and step % 25 == 0:
                print(f"step {step}  loss {loss.item():.3f}  {time.time() - t0:.0f} s", flush=True)
            if time.time() - t0 >= budget:
                break
        epoch += 1
    dev = torch.device("cpu")
    metrics = {"step": step, "loss": float(loss.item()), **validate(model, val_ds, dev), "elapsed_s": time.time() - t0}
    history.append(metrics)
    meta = {"scheme": scheme.to_dict(), "pixel_size_A": float(settings["multislice"]["store_sampling_A"]),
            "normalization": STANDARD, "temperature": fit_temperature(model, val_ds, dev),
            "class_weights": cw.tolist(), "history": history,
            "train_config": {"recipe": "benchmarks/plain_unet.py", "minutes": minutes, "batch": batch, "crop": crop,
                             "lr": lr, "seed": seed, "widths": list(WIDTHS), "steps": step},
            "dataset": {"path": str(data), "settings": settings, "train_structures": len(train_idx),
                        "val_structures": len(val_idx)}}
    save_model(out, model, meta)
    return metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="dataset store made by `hrtem3d simulate`")
    ap.add_argument("--out", required=True, help="model file (*.safetensors)")
    ap.add_argument("--minutes", type=float, required=True, help="wall-time budget of the training")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="data-loading processes")
    ap.add_argument("--max-structures", type=int, default=None, help="use only the first N finished structures")
    a = ap.parse_args(argv)
    m = train_plain(a.data, a.out, a.minutes, a.batch, a.crop, a.lr, a.seed, a.threads, a.workers, a.max_structures)
    print(f"wrote {a.out}: {m['step']} steps, validation column-pixel accuracy {m['col_acc']:.3f}")


if __name__ == "__main__":
    main()
