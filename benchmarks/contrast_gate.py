"""Can one image tell how much lattice contrast its microscope took away? A contrast-loss regressor as a measurement.

A diffuse incoherent background (inelastic scattering, the Stobbs factor) lowers the lattice contrast of a
real image 1.5 to 3 times and leaves the shot noise as it was; a counting network trained on simulations
then reads every column thinner, and is sure. `--contrast-gain auto` (`hrtem3d.segmentation.gain`) infers
the lost contrast from the counts' share of the particle's size, a weak witness (±12 % between shapes).
This script asks whether a network that sees the whole image (outline, edge columns, Fresnel fringes,
the film, the noise) can say more: the vibration gate's encoder with its attention pooling and a head giving
the mean and spread of log g, g = 1 + b the contrast loss of the scope's background, trained through the
microscope envelope (films, aberrations, vibration, MTF, native pixel sizes; a background on a share of
the samples, b uniform in `--background`) on a static store.

It reports, per source and dose, the mean g it reads, the share of images it would raise (g's lower
bound exp(mu - sigma) above `--raise-above`) and, where the truth is known, the error of log g.

    python benchmarks/contrast_gate.py train /work/data/train300.zarr --steps 1500 --out cgate.safetensors
    python benchmarks/contrast_gate.py read cgate.safetensors --robust /work/data/robust \
        --test /work/data/test.zarr --independent ../shared/testdata/independent
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from hrtem3d.data.dataset import HrtemDataset
from hrtem3d.data.normalize import relative_contrast
from hrtem3d.model.gate import VibrationGate, default_gate_path, load_gate, save_gate
from hrtem3d.segmentation.gain import LOG_SIGMA_RANGE, ContrastRead
from hrtem3d.simulate.scope import ScopeEnvelope

#: the contrast a set's background leaves (robust_sets.py: "background" 0.5, and "all" holds it too)
KNOWN_G = {"robust background": 2.0, "robust all": 2.0}


def two_outputs(gate: VibrationGate) -> VibrationGate:
    """The gate with a head giving (mu, log sigma) of log g, its last layer started at (0, log 0.3)."""
    c = gate.unet.config.widths[-1]
    last = nn.Linear(c, 2)
    nn.init.normal_(last.weight, std=0.01)
    with torch.no_grad():
        last.bias[:] = torch.tensor([0.0, float(np.log(0.3))])
    gate.head[-1] = last
    gate.outputs = 2
    return gate


def mu_log_sigma(gate: VibrationGate, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, log sigma) of log g for a batch, log sigma held to `LOG_SIGMA_RANGE` as `ContrastRead` reads it."""
    out = gate(x)
    return out[:, 0], out[:, 1].clamp(*LOG_SIGMA_RANGE)


@dataclass
class BackgroundScope(ScopeEnvelope):
    """The scope with its background drawn on a share `p_background` of every sample (ideal ones too), apart
    from the other effects' `p_effect`: the regressor's prior mass at g = 1 is then 1 - p_background."""

    p_background: float = 0.5

    def sample(self, rng: np.random.Generator, optics=None, detector=None):
        acq = super().sample(rng, optics, detector)
        on = rng.random() < self.p_background
        acq.background = float(rng.uniform(*self.background)) if on else 0.0
        acq.background_ripple = self.draw_ripple(rng) if on else 0.0
        acq.background_period_A = float(rng.uniform(*self.background_period_A))
        return acq


class Samples(torch.utils.data.Dataset):
    """(relative-contrast working crop [1, H, W], log g) of `HrtemDataset` draws through the scope."""

    def __init__(self, ds: HrtemDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        d = self.ds.draw(i)
        x = relative_contrast(d["work"], mean=d["flux"])
        return torch.from_numpy(np.ascontiguousarray(x[None], np.float32)), \
            torch.tensor(float(np.log1p(d["acquisition"].background)), dtype=torch.float32)


def train(a: argparse.Namespace) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    if a.resume:
        gate, meta = load_gate(a.resume)
    else:
        gate, meta = load_gate(a.init)
        gate = two_outputs(gate)
    if a.freeze_encoder:  # the vibration gate's encoder as it is: one encoder pass could serve both heads
        gate.unet.requires_grad_(False)
        nn.init.normal_(gate.pool.weight, std=0.01)
    gate.train()
    if a.freeze_encoder:
        gate.unet.eval()  # its BatchNorm statistics stay the vibration gate's
    lo, hi = (float(v) for v in a.background.split(","))
    scope = ScopeEnvelope(background=(lo, hi), p_clean=a.p_clean, p_ripple=a.p_ripple) if a.p_background is None \
        else BackgroundScope(background=(lo, hi), p_clean=a.p_clean, p_background=a.p_background, p_ripple=a.p_ripple)
    ds = HrtemDataset(a.store, crop=a.crop, samples_per_epoch=a.steps * a.batch, seed=31, scope=scope)
    loader = iter(torch.utils.data.DataLoader(Samples(ds), batch_size=a.batch, num_workers=a.workers))
    opt = torch.optim.AdamW([q for q in gate.parameters() if q.requires_grad], lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.steps, pct_start=0.05)
    t0, losses, errs = time.time(), [], []
    for step in range(a.steps):
        x, y = next(loader)
        mu, ls = mu_log_sigma(gate, x)
        loss = (0.5 * ((y - mu) / ls.exp()) ** 2 + ls).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        errs.append(float((mu.detach() - y).abs().mean()))
        if (step + 1) % 100 == 0 or step + 1 == a.steps:
            print(f"step {step + 1}: nll {np.mean(losses[-100:]):.3f}, |err log g| {np.mean(errs[-100:]):.3f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
    gate.eval()
    save_gate(a.out, gate, {**meta, "threshold": 0.0, "kind": "contrast-loss regressor (mu, log sigma of log g)",
                            "store": str(a.store), "steps": a.steps, "lr": a.lr, "background": [lo, hi],
                            "p_background": a.p_background, "p_ripple": a.p_ripple, "init": str(a.resume or a.init),
                            "frozen_encoder": bool(a.freeze_encoder)})
    print(f"wrote {a.out}")


def uniform_sources(a: argparse.Namespace) -> list[tuple[str, Path, float]]:
    """(name, folder, pixel size) of the folders with noise-free `pK_clean.tif` images to dim."""
    out = []
    if a.robust:
        out.append(("robust clean_0p10", a.robust / "clean_0p10", 0.10))
    if a.independent:
        out.append(("independent", a.independent, 0.10))
    return out


def uniform_images(folder: Path, g: float, dose: float, px: float, n: int):
    """The first `n` noise-free images of `folder` under a uniform background b = g - 1 (mean kept), with
    Poisson noise at `dose` e/Å²."""
    import tifffile

    for k in range(n):
        f = folder / f"p{k}_clean.tif"
        if not f.is_file():
            return
        clean = tifffile.imread(f).astype(np.float32)
        dim = (clean + (g - 1) * clean.mean()) / g
        yield np.random.default_rng([k, int(dose), int(g * 100)]).poisson(np.clip(dim, 0, None) * dose * px * px) \
            .astype(np.float32)


def read(a: argparse.Namespace) -> None:
    from lattice_route import p_by_source, store_fields

    torch.set_num_threads(2)
    contrast = ContrastRead.from_file(a.gate)  # as `segment` reads an image

    def read_one(image: np.ndarray, px: float) -> tuple[float, float]:
        g, sigma = contrast.read(image, px)
        return float(np.log(g)), sigma

    groups = p_by_source(a, read_one)
    truth = dict(KNOWN_G)
    for g in [float(v) for v in a.uniform_gains.split(",")] if a.uniform_gains else []:
        # noise-free images of other code paths under a uniform background (no ripple): does it read the
        # contrast scale itself, or a background's slow variation?
        for name, folder, px in uniform_sources(a):
            source = f"{name}, uniform g={g:g}"
            truth[source] = g
            for dose in (300.0, 1000.0, 5000.0):
                groups.append((source, dose, [read_one(img, px) for img in uniform_images(folder, g, dose, px, a.n)]))
    if a.test:
        for dose in (300.0, 1000.0, 5000.0):
            groups.append(("test.zarr", dose, [read_one(img, px) for img, px in store_fields(a.test, dose, a.n)]))
    rows = []
    for source, dose, rs in groups:
        mu, sig = np.array([r[0] for r in rs]), np.array([r[1] for r in rs])
        truth_g = np.log(truth.get(source, 1.0))
        rows.append({"source": source, "dose": int(dose), "n": len(rs), "true g": float(np.exp(truth_g)),
                     "mean g": float(np.exp(mu).mean()), "g range": f"{np.exp(mu).min():.2f}-{np.exp(mu).max():.2f}",
                     "mean sigma": float(sig.mean()), "|err log g|": float(np.abs(mu - truth_g).mean()),
                     f"raised (lower bound > {a.raise_above})": float((np.exp(mu - sig) > a.raise_above).mean())})
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".2f"))


def set_threshold(a: argparse.Namespace) -> None:
    """The gate's threshold: the `--percentile` of the lower bound exp(mu - sigma) of g on whole fields of a
    static training store at full contrast (3 doses), not below `--floor`; written into `--save`."""
    from lattice_route import store_fields

    torch.set_num_threads(2)
    gate, meta = load_gate(a.gate)
    contrast = ContrastRead(gate, float(meta["pixel_size_A"]), meta["normalization"], 0.0)  # as `segment` reads
    lbs = []
    for dose in (300.0, 1000.0, 5000.0):
        for img, px in store_fields(a.store, dose, a.n, a.first_structure):
            g, sigma = contrast.read(img, px)
            lbs.append(g * float(np.exp(-sigma)))
    pct = float(np.percentile(lbs, a.percentile))
    t = round(max(pct, a.floor), 2)
    print(f"lower bound of g on {len(lbs)} fields of {a.store}: median {np.median(lbs):.3f}, "
          f"{a.percentile:g}th percentile {pct:.3f}, max {max(lbs):.3f} -> threshold {t:.2f}")
    if a.save:
        save_gate(a.save, gate, {**meta, "threshold": t, "threshold_source":
                                 f"{a.percentile:g}th percentile ({pct:.3f}) of the lower bound of g on {len(lbs)} "
                                 f"whole fields of {Path(a.store).name} (structures {a.first_structure} on) at "
                                 f"300,1000,5000 e/Å², floor {a.floor:g}"})
        print(f"wrote {a.save}")


def read_fitting(a: argparse.Namespace) -> None:
    """Gates' readings against the true g on fitting images (drawn through the envelope as
    `gate_confidence.py collect` draws them): the mean and mean absolute error of log g per kind and range of g,
    and the least-squares scale of log g through the origin (the shrink that would centre them)."""
    from gate_confidence import fitting_draws

    torch.set_num_threads(2)
    reads = {Path(g).stem: ContrastRead.from_file(g) for g in a.gates}
    lo, hi = (float(v) for v in a.background.split(","))
    rows = []
    for path in a.store:
        for _, _, d, _ in fitting_draws(path, a.n, background=(lo, hi), truth=False):
            acq = d.get("acquisition")
            g_true = 1 + (acq.background if acq is not None else 0.0)
            kind = "ideal" if g_true == 1 else "background"
            for name, cr in reads.items():
                g, _ = cr.read(d["counts"], d["pixel_size_A"], 1.0)
                rows.append({"gate": name, "kind": kind, "g_true": g_true, "err": np.log(g) - np.log(g_true),
                             "log_g": np.log(g)})
    df = pd.DataFrame(rows)
    df["true g"] = pd.cut(df.g_true, [0.99, 1.01, 1.5, 2.0, 2.5, 3.6]).astype(str)
    table = df.groupby(["gate", "kind", "true g"]).agg(n=("err", "size"), mean_err=("err", "mean"),
                                                       mean_abs_err=("err", lambda e: e.abs().mean()))
    print(table.round(3).to_markdown())
    for name, g in df[df.g_true > 1].groupby("gate"):
        scale = (g.log_g * np.log(g.g_true)).sum() / (g.log_g ** 2).sum()
        print(f"{name}: least-squares scale of log g on images with a background {scale:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("store")
    t.add_argument("--init", type=Path, default=default_gate_path(), help="a gate file whose encoder starts it")
    t.add_argument("--resume", type=Path, help="continue from a file written by this script")
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--crop", type=int, default=256)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--background", default="0.0,2.0", help="b range of the scope's background (g = 1 + b)")
    t.add_argument("--p-clean", type=float, default=0.25)
    t.add_argument("--p-background", type=float, default=None,
                   help="share of samples with a background, apart from the other effects (default: the scope's "
                        "p_effect, and none on its ideal samples)")
    t.add_argument("--p-ripple", type=float, default=1.0,
                   help="share of the drawn backgrounds that vary across the field (the rest uniform)")
    t.add_argument("--workers", type=int, default=1)
    t.add_argument("--freeze-encoder", action="store_true", help="train the pooling and head only")
    t.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("read")
    r.add_argument("gate", type=Path)
    from lattice_route import add_source_args

    add_source_args(r, sets="clean_0p10,background,all,phonons,carbon,mtf_none,astig,vibration,tilt", n=8)
    r.add_argument("--raise-above", type=float, default=1.3)
    r.add_argument("--uniform-gains", default="", help="also read the noise-free images of clean_0p10 and the "
                   "independent set under a uniform background of these contrast losses, e.g. 1,1.5,2,3")
    h = sub.add_parser("threshold")
    h.add_argument("gate", type=Path)
    h.add_argument("--store", required=True)
    h.add_argument("--n", type=int, default=300, help="whole fields a dose")
    h.add_argument("--first-structure", type=int, default=0)
    h.add_argument("--percentile", type=float, default=99.0)
    h.add_argument("--floor", type=float, default=1.2,
                   help="never below this: a gain of 1.25 taken on an ideal image costs it a quarter of its counts")
    h.add_argument("--save", type=Path)
    f = sub.add_parser("read-fitting", help="readings against the true g on fitting images drawn through the envelope")
    f.add_argument("gates", type=Path, nargs="+")
    f.add_argument("--store", type=Path, action="append", required=True, help="repeatable")
    f.add_argument("--n", type=int, default=300, help="images drawn from each store")
    f.add_argument("--background", default="0.1,2.0", help="b range (as gate_confidence.py collect)")
    a = ap.parse_args()
    {"train": train, "read": read, "threshold": set_threshold, "read-fitting": read_fitting}[a.cmd](a)


if __name__ == "__main__":
    main()
