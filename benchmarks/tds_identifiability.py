"""Can one image tell whether its lattice vibrates? A static-vs-TDS classifier as a measurement.

Every count model trained on the same particles static and with frozen-phonon TDS (the pairs store of
`pair_store.py`) ends at a compromise: static images read too thick, TDS images too thin, by about the
same amount. Either the image does not reveal which case it is (the compromise is the Bayes answer), or
the count network never learned to see it. This script measures the first directly: it fine-tunes the
encoder of a count model, plus attention pooling and a linear head, to say "TDS or static" for a crop,
on the training pairs, and reports its accuracy on the held-out particles of `bench_tds_pairs.py`'s
cache (same particles static and with TDS x4, the in-domain optics) at fixed doses.

    python benchmarks/tds_identifiability.py /work/data/s21_pairs.zarr \
        --init benchmarks/candidates/mix_v11.safetensors --test /work/data/tds_pairs --steps 2400 --n-test 64
    # 25 min on 2 cores; --steps 800 in 9 min

Prints a table: dose, accuracy, mean p(TDS) on static and on TDS crops, ROC AUC.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from hrtem3d.data.dataset import HrtemDataset
from hrtem3d.data.normalize import relative_contrast
from hrtem3d.model.gate import VibrationGate, load_gate, save_gate
from hrtem3d.model.io import load_model
from hrtem3d.model.unet import LATTICE_PARTS
from hrtem3d.simulate.scope import ScopeEnvelope


def gate_from(init: str | Path, resume: Path | None = None) -> tuple[VibrationGate, dict]:
    """A gate on the encoder of the model `init` (its weights), or the gate file `resume`; with the metadata a
    gate file needs (the model's working grid and normalisation)."""
    unet, meta = load_model(init, "cpu")
    if resume:
        gate, _ = load_gate(resume)
    else:
        gate = VibrationGate(unet.config)
        gate.unet.load_state_dict({k: v for k, v in unet.state_dict().items() if not k.startswith(LATTICE_PARTS)},
                                  strict=False)
    return gate, {"pixel_size_A": meta["pixel_size_A"], "normalization": meta.get("normalization", "median/MAD")}


def batch(ds: HrtemDataset, idx: list[int], structures: list[int] | None = None):
    xs, ys = [], []
    for j, i in enumerate(idx):
        d = ds.draw(i, None if structures is None else structures[j])
        xs.append(relative_contrast(d["counts"], mean=d["flux"])[None])
        ys.append(float(ds.vibrating[d["structure"]]))
    return torch.from_numpy(np.stack(xs)).float(), torch.tensor(ys)


def auc(p: np.ndarray, y: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--init", required=True)
    ap.add_argument("--test", required=True, help="bench_tds_pairs cache (static.zarr, tds4.zarr)")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--doses", default="300,1000,5000")
    ap.add_argument("--n-test", type=int, default=48, help="crops per store and dose")
    ap.add_argument("--scope", action="store_true",
                    help="train through the default microscope envelope without its background (as the envelope "
                         "fine-tunes were), so the classifier meets films, aberrations, vibration, MTF and native "
                         "pixel sizes")
    ap.add_argument("--workers", type=int, default=0, help="data-loader processes")
    ap.add_argument("--out", type=Path, help="save the gate file (`hrtem3d.model.gate`)")
    ap.add_argument("--resume", type=Path, help="continue from a gate file saved with --out")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    net, meta = gate_from(args.init, args.resume)
    net.train()
    scope = ScopeEnvelope(background=(0.0, 0.0)) if args.scope else None
    train = HrtemDataset(args.store, crop=256, samples_per_epoch=args.steps * args.batch,
                         seed=12 if args.resume else 11, scope=scope,
                         lattice_label=True)
    loader = iter(torch.utils.data.DataLoader(train, batch_size=args.batch, num_workers=args.workers))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    t0, losses = time.time(), []
    for step in range(args.steps):
        x, _, _, y = next(loader)
        loss = nn.functional.binary_cross_entropy_with_logits(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            print(f"step {step + 1}: loss {np.mean(losses[-100:]):.3f} ({time.time() - t0:.0f} s)", flush=True)
    net.eval()
    if args.out:
        # threshold 0.5 until `lattice_route.py --set-threshold` takes it from static training images
        save_gate(args.out, net, {**meta, "threshold": 0.5, "init": str(args.init), "store": str(args.store),
                                  "steps": args.steps, "lr": args.lr, "scope": bool(args.scope),
                                  "resumed_from": str(args.resume) if args.resume else None})
    rows = []
    for dose in [float(d) for d in args.doses.split(",")]:
        ps, ys = [], []
        for name in ("static.zarr", "tds4.zarr"):
            ds = HrtemDataset(Path(args.test) / name, crop=256, samples_per_epoch=args.n_test, seed=99, dose=dose,
                              augment=False)
            n = len(ds.indices)
            with torch.no_grad():
                for start in range(0, args.n_test, 8):
                    idx = list(range(start, min(args.n_test, start + 8)))
                    x, y = batch(ds, idx, [i % n for i in idx])
                    ps.append(torch.sigmoid(net(x)).numpy())
                    ys.append(y.numpy())
        p, y = np.concatenate(ps), np.concatenate(ys)
        rows.append({"dose": dose, "accuracy": float(((p > 0.5) == y).mean()), "p(TDS) static": float(p[y == 0].mean()),
                     "p(TDS) TDS": float(p[y == 1].mean()), "AUC": auc(p, y)})
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
