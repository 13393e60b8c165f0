"""Interpolate models in weight space (a "model soup", WiSE-FT): one network, no extra inference cost.

Models fine-tuned from one parent (here v2 and its fine-tunes through the microscope envelope) sit in
one basin of the loss, so the weighted mean of their weights is itself a working network; robust
fine-tuning of large models (Wortsman et al., 2022) found that the interpolation between a parent and
its fine-tune often beats both under distribution shift while keeping most of the parent's in-domain
accuracy. All models must share one network configuration. BatchNorm running statistics and the
softmax temperature are averaged like the weights. The metadata comes from the first model (the scope
envelope from any model that has one, so `calibrate` fits the result through it; drop `scope_envelope`
to calibrate on the store's own grid), without a calibration: run `hrtem3d calibrate` on the result
before reading its confidences (docs/benchmarks.md, "Fourteenth look").

    .venv/bin/python benchmarks/soup.py src/hrtem3d/weights/default.safetensors e4.safetensors \
        --weights 0.5,0.5 --out soup.safetensors
"""

from __future__ import annotations

import argparse

import torch


def soup(paths: list[str], weights: list[float]) -> tuple[torch.nn.Module, dict]:
    """The weighted mean of the networks in ``paths`` (weights normalised to sum 1) and its metadata."""
    from hrtem3d.model.io import load_model

    if len(paths) != len(weights):
        raise SystemExit(f"{len(paths)} models but {len(weights)} weights; give one weight a model")
    w = [x / sum(weights) for x in weights]
    nets = [load_model(p, device="cpu") for p in paths]
    base, meta = nets[0]
    if any(n[0].config != base.config for n in nets[1:]):
        raise SystemExit("the models differ in network configuration; a soup needs one architecture")
    states = [n[0].state_dict() for n in nets]
    mixed = {}
    for k, v in states[0].items():
        if v.is_floating_point():
            mixed[k] = sum(wi * s[k].double() for wi, s in zip(w, states)).to(v.dtype)
        else:  # e.g. BatchNorm's num_batches_tracked
            mixed[k] = v
    base.load_state_dict(mixed)
    meta = {k: v for k, v in meta.items()
            if k not in ("unet", "package_version", "column_calibration", "detection_threshold")}
    meta["temperature"] = sum(wi * float(m.get("temperature", 1.0)) for wi, (_, m) in zip(w, nets))
    for _, m in nets[1:]:
        for key in ("scope_envelope", "envelope_source"):
            if key in m and key not in meta:
                meta[key] = m[key]
    meta["soup"] = [{"model": p, "weight": wi} for p, wi in zip(paths, w)]
    return base, meta


def main(argv: list[str] | None = None) -> None:
    from hrtem3d.model.io import save_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model files (*.safetensors) with one network configuration")
    ap.add_argument("--weights", help="comma-separated weights, one a model (default: equal)")
    ap.add_argument("--out", required=True, help="model file to write (*.safetensors)")
    a = ap.parse_args(argv)
    weights = [float(x) for x in a.weights.split(",")] if a.weights else [1.0] * len(a.models)
    model, meta = soup(a.models, weights)
    save_model(a.out, model, meta)
    print(f"{a.out}: " + ", ".join(f"{s['weight']:.2f} x {s['model']}" for s in meta["soup"]))


if __name__ == "__main__":
    main()
