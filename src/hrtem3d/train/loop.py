"""Training: resumable, seeded, CPU or CUDA (mixed precision), several GPUs/nodes via torchrun (DDP).

`train(data, out, config)` trains a U-Net on a dataset store and writes
`out` (safetensors + JSON metadata). A checkpoint `out.ckpt` is written every
`checkpoint_every` steps; running the same command again continues from it.
Validation uses whole structures held out by index, never crops of training ones.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from hrtem3d.data import store
from hrtem3d.data.dataset import HrtemDataset
from hrtem3d.data.normalize import NORMALIZATIONS, RELATIVE
from hrtem3d.errors import HrtemError
from hrtem3d.labels import ClassScheme, class_weights_from_counts
from hrtem3d.model.io import save_model
from hrtem3d.model.unet import LATTICE_PARTS, UNet, UNetConfig, pick_device
from hrtem3d.simulate.optics import OpticsEnvelope
from hrtem3d.simulate.scope import ScopeEnvelope
from hrtem3d.train.loss import lattice_hypotheses_loss, soft_weighted_ce


@dataclass
class TrainConfig:
    """Training settings (stored in the model file).

    Attributes:
        steps: optimiser steps in total (a resumed run continues to this number).
        batch: crops per step (per process under DDP).
        crop: crop side in pixels at the dataset's sampling.
        lr: peak AdamW learning rate, cosine decay after `warmup` steps.
        val_every: steps between validations; val_samples: fixed validation crops.
        val_fraction: share of structures held out for validation (by index).
        widths: U-Net filters per level.
        global_context: add the image-level context block at the bottleneck (`UNetConfig.global_context`).
        lattice_heads: a static and a vibrating reading with an image-level gate (`UNetConfig.lattice_heads`),
            each head trained on its own kind of structure (frozen phonons or not), the gate on the kind;
            `gate_weight` weighs the gate's loss.
        class_weight_power: rare depth classes weigh (median/count)**power.
        seed: seeds the network initialisation and the data draws.
        normalization: input normalisation, "relative" or "median/MAD" (`hrtem3d.data.normalize`).
        workers: DataLoader worker processes.
        scope: form the training images through the microscope envelope (`ScopeEnvelope`: native
            pixel sizes, calibration error, support film, residual aberrations, vibration,
            background, MTF) and `segment`'s resampling; False trains on the store's grid only.
        init: a model file whose weights start the run (fine-tuning); its widths must match.
    """

    steps: int = 4000
    batch: int = 16
    crop: int = 160
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    val_every: int = 250
    val_samples: int = 48
    val_fraction: float = 0.1
    checkpoint_every: int = 50
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    residual: bool = False
    global_context: bool = False
    lattice_heads: bool = False
    gate_weight: float = 0.2
    class_weight_power: float = 0.5
    centre_weight: float = 4.0
    normalization: str = RELATIVE
    seed: int = 0
    workers: int = 1
    threads: int = 0
    scope: bool = True
    init: str | None = None

    def validate(self) -> None:
        if self.steps < 1 or self.batch < 1 or not 16 <= self.crop <= 4096:
            raise HrtemError("steps and batch must be >= 1 and crop within 16..4096")
        if not 0 < self.val_fraction < 1:
            raise HrtemError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.lr <= 0:
            raise HrtemError("lr must be positive")
        if self.normalization not in NORMALIZATIONS:
            raise HrtemError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")


def split_structures(indices: list[int], val_fraction: float) -> tuple[list[int], list[int]]:
    """Deterministic split by structure index: every k-th structure is validation."""
    k = max(2, round(1 / val_fraction))
    val = [i for i in indices if i % k == k - 1]
    train = [i for i in indices if i % k != k - 1]
    if not val or not train:
        raise HrtemError(f"need at least {k} structures to split off validation; simulate more")
    return train, val


def training_class_weights(data: str | Path, train_config: dict) -> np.ndarray:
    """The per-class loss weights a run with `train_config` computes on the store `data`."""
    root = store.open_store(data)
    scheme = ClassScheme.from_dict(store.settings_of(root)["scheme"])
    train_idx, _ = split_structures(sorted(store.completed(root)), float(train_config.get("val_fraction", 0.1)))
    return class_weights_from_counts(class_counts(root, train_idx, scheme),
                                     float(train_config.get("class_weight_power", 0.5)))


def class_counts(root, indices: list[int], scheme: ClassScheme) -> np.ndarray:
    """Pixel count per class over the target maps of `indices`."""
    counts = np.zeros(scheme.n_classes, np.int64)
    wanted = set(indices)
    for g in store.structure_groups(root):
        if int(g.attrs["index"]) in wanted:
            counts += np.bincount(g["cls"][:].ravel(), minlength=scheme.n_classes)[: scheme.n_classes]
    return counts


def rank_seed(config: TrainConfig, rank: int) -> int:
    """The training data seed of process `rank` under torchrun: every rank draws its own samples."""
    return config.seed * 1000 + rank


def train(data: str | Path, out: str | Path, config: TrainConfig | None = None,
          envelope: OpticsEnvelope | None = None, progress: bool = True, device: str | None = None,
          scope: ScopeEnvelope | None = None) -> dict:
    """Train (or resume training) a column-depth U-Net; returns final validation metrics.

    `envelope` (optics and dose) and `scope` (what the microscope adds; default `ScopeEnvelope()`
    when `config.scope`) are the ranges the training images are drawn from; both go into the model file.
    """
    config = config or TrainConfig()
    config.validate()
    out = Path(out)
    ckpt_path = out.with_name(out.name + ".ckpt")
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = int(os.environ.get("RANK", "0"))
    dev = pick_device(device)
    if ddp:
        import torch.distributed as dist

        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(dev)
    if config.threads:
        torch.set_num_threads(config.threads)

    root = store.open_store(data)
    settings = store.settings_of(root)
    scheme = ClassScheme.from_dict(settings["scheme"])
    done = sorted(store.completed(root))
    train_idx, val_idx = split_structures(done, config.val_fraction)
    cw = training_class_weights(data, asdict(config))
    from hrtem3d.simulate.envelope_file import envelope_of

    stored = envelope_of(settings)  # the store's envelope (simulate --envelope), else the shipped default
    scope = scope or ((stored.scope if stored else ScopeEnvelope()) if config.scope else None)
    train_ds = HrtemDataset(data, train_idx, crop=config.crop, samples_per_epoch=config.batch * 200,
                            envelope=envelope, seed=rank_seed(config, rank), class_weights=cw,
                            centre_weight=config.centre_weight, normalization=config.normalization, scope=scope,
                            lattice_label=config.lattice_heads)
    envelope = train_ds.envelope  # the dataset resolves None to the store's optics envelope, else the default
    val_ds = HrtemDataset(data, val_idx, crop=config.crop, samples_per_epoch=config.val_samples,
                          envelope=envelope, seed=10**6 + config.seed, augment=False,
                          normalization=config.normalization, scope=scope)

    torch.manual_seed(config.seed)
    model = UNet(UNetConfig(n_classes=scheme.n_classes, widths=tuple(config.widths), residual=config.residual,
                            global_context=config.global_context, lattice_heads=config.lattice_heads))
    if config.init and not ckpt_path.exists():
        _init_from(model, config.init)
    model.to(dev, memory_format=torch.channels_last)  # about 1.4x faster convolutions on CPU
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state = {"step": 0, "history": []}
    if ckpt_path.exists():
        state = _load_checkpoint(ckpt_path, model, opt, config, dev)
    net = model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    for group in opt.param_groups:
        group["lr"] = config.lr * _lr_factor(state["step"], config)

    use_amp = dev.type == "cuda"
    from tqdm.auto import tqdm

    bar = tqdm(total=config.steps, initial=state["step"], disable=not progress or rank != 0, desc="train",
               unit="step")
    step = state["step"]
    epoch = step // 200
    metrics = state["history"][-1] if state["history"] else {}
    t0 = time.time()
    while step < config.steps:
        train_ds.set_epoch(epoch)
        loader = DataLoader(train_ds, batch_size=config.batch, num_workers=config.workers,
                            persistent_workers=False, pin_memory=dev.type == "cuda")
        skip = step % 200
        for b, (x, target, w, *label) in enumerate(loader):
            if b < skip:
                continue
            model.train()
            x = x.to(dev, non_blocking=True, memory_format=torch.channels_last)
            target, w = target.to(dev), w.to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                pred = net(x, hypotheses=config.lattice_heads)
            if config.lattice_heads:
                loss = lattice_hypotheses_loss(*pred, label[0].to(dev), target, w, config.gate_weight)
            else:
                loss = soft_weighted_ce(pred, target, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            for group in opt.param_groups:
                group["lr"] = config.lr * _lr_factor(step, config)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", **({"val_col_acc": f"{metrics['col_acc']:.3f}"}
                                                           if metrics else {}))
            if step % config.val_every == 0 or step == config.steps:
                metrics = {"step": step, "loss": float(loss.item()), **validate(model, val_ds, dev),
                           "elapsed_s": time.time() - t0}
                state["history"].append(metrics)
            if rank == 0 and (step % config.checkpoint_every == 0 or step == config.steps):
                _save_checkpoint(ckpt_path, model, opt, step, state["history"], config)
            if step >= config.steps:
                break
        epoch += 1
    bar.close()
    if rank == 0:
        temperature = fit_temperature(model, val_ds, dev)
        meta = {"scheme": scheme.to_dict(), "pixel_size_A": float(settings["multislice"]["store_sampling_A"]),
                "envelope": envelope.to_dict(), "scope_envelope": scope.to_dict() if scope else None,
                "envelope_source": stored.source if stored else "default",
                "train_config": _jsonable(asdict(config)),
                "dataset": {"path": str(data), "settings": settings, "train_structures": len(train_idx),
                            "val_structures": len(val_idx)},
                "temperature": temperature, "history": state["history"], "class_weights": cw.tolist(),
                "normalization": config.normalization}
        save_model(out, model, meta)
    if ddp:
        import torch.distributed as dist

        dist.destroy_process_group()
    return metrics


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup:
        return (step + 1) / config.warmup
    t = (step - config.warmup) / max(1, config.steps - config.warmup)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


@torch.no_grad()
def predict_batches(model: UNet, ds: HrtemDataset, dev: torch.device, weights: bool = False):
    """Yield (logits, target) over a dataset in eval mode; (logits, target, pixel weights) with `weights`."""
    model.eval()
    for i in range(len(ds)):
        x, target, w = ds[i]
        out = model(x[None].to(dev)).float().cpu(), target[None]
        yield (*out, w[None]) if weights else out


def validate(model: UNet, ds: HrtemDataset, dev: torch.device) -> dict:
    """Pixel accuracy at column cores (alpha > 0.9) and on background, and the training loss on `ds`."""
    core_ok = core_n = bg_ok = bg_n = 0
    losses = []
    for logits, target, w in predict_batches(model, ds, dev, weights=True):
        losses.append(float(soft_weighted_ce(logits, target, w)))
        pred = logits.argmax(1)
        cls, alpha = target[:, 0].long(), target[:, 1]
        core = alpha > 0.9
        core_ok += int((pred[core] == cls[core]).sum())
        core_n += int(core.sum())
        bg = cls == 0
        bg_ok += int((pred[bg] == 0).sum())
        bg_n += int(bg.sum())
    return {"col_acc": core_ok / max(core_n, 1), "bg_acc": bg_ok / max(bg_n, 1), "val_loss": float(np.mean(losses))}


def fit_temperature(model: UNet, ds: HrtemDataset, dev: torch.device) -> float:
    """Softmax temperature minimising the NLL of column-core pixels on validation crops."""
    zs, ys = [], []
    for logits, target in predict_batches(model, ds, dev):
        core = target[:, 1] > 0.9
        zs.append(logits.permute(0, 2, 3, 1)[core])
        ys.append(target[:, 0].long()[core])
    if not zs or sum(len(z) for z in zs) == 0:
        return 1.0
    z, y = torch.cat(zs), torch.cat(ys)
    best = min(np.linspace(0.5, 3.0, 26), key=lambda t: float(torch.nn.functional.cross_entropy(z / t, y)))
    return float(best)


def _save_checkpoint(path: Path, model, opt, step: int, history: list, config: TrainConfig) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "history_json": json.dumps(history), "config_json": json.dumps(_jsonable(asdict(config)))}, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, model, opt, config: TrainConfig, dev) -> dict:
    try:
        ck = torch.load(path, map_location=dev, weights_only=True)
    except Exception as e:
        raise HrtemError(f"checkpoint {path} is unreadable ({type(e).__name__}); delete it to start afresh") from None
    old = json.loads(ck["config_json"])
    new, defaults = _jsonable(asdict(config)), _jsonable(asdict(TrainConfig()))
    # a setting added since the checkpoint was written had its default then
    keys = [k for k in new if k not in ("steps", "workers", "threads", "val_every", "checkpoint_every")
            and old.get(k, defaults[k]) != new[k]]
    if keys:
        raise HrtemError(f"checkpoint {path} was made with other settings ({', '.join(keys)}); "
                         "use the same settings to resume or delete the checkpoint")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    return {"step": int(ck["step"]), "history": json.loads(ck["history_json"])}


def _init_from(model: UNet, path: str) -> None:
    """Start from the weights of the model file at `path` (fine-tuning)."""
    from hrtem3d.model.io import load_model

    src, _ = load_model(path, "cpu")
    mine, theirs = model.state_dict(), src.state_dict()
    # a context block the init model lacks starts as the identity (`GlobalContext`); lattice heads it lacks
    # start as two copies of its head and an untrained gate
    added = {k for k in set(mine) - set(theirs) if k.split(".")[0] in ("context", *LATTICE_PARTS)}
    if set(mine) - added != set(theirs) or any(theirs[k].shape != mine[k].shape for k in theirs):
        raise HrtemError(f"`init` model {path} has another network shape; give the same `widths` as it was "
                         "trained with", param="widths")
    if "vibrating_head.weight" in added:
        theirs = {**theirs, "vibrating_head.weight": theirs["head.weight"], "vibrating_head.bias": theirs["head.bias"]}
        added -= {"vibrating_head.weight", "vibrating_head.bias"}
    model.load_state_dict(theirs, strict=not added)


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=list))


__all__ = ["TrainConfig", "train"]
