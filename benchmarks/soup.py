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

`--layer PREFIX=W1,W2,...` gives the tensors whose names start with PREFIX their own weights (the
longest matching prefix wins), for a layer-wise soup: e.g. the fine-tune's first encoder levels and the
parent's everything else (`--weights 1,0 --layer down.0.=0,1 --layer down.1.=0,1`). Fine-tuning only
the first layers is known to suit shifts at the input (blur, noise, aberrations: "surgical"
fine-tuning, Lee et al., 2023); the layer-wise soup asks the same of a fine-tune already made
(docs/benchmarks.md, "Fifteenth look").
"""

from __future__ import annotations

import argparse

import torch


def _normalised(weights: list[float], n: int, what: str) -> list[float]:
    if len(weights) != n:
        raise SystemExit(f"{n} models but {len(weights)} weights{what}; give one weight a model")
    if min(weights) < 0 or sum(weights) <= 0:
        raise SystemExit(f"weights{what} must be >= 0 and not all zero, got {weights}")
    return [x / sum(weights) for x in weights]


def soup(paths: list[str], weights: list[float],
         layers: dict[str, list[float]] | None = None) -> tuple[torch.nn.Module, dict]:
    """The weighted mean of the networks in ``paths`` (weights normalised to sum 1) and its metadata.

    ``layers`` maps a tensor-name prefix (e.g. ``"down.0."``) to its own weights; the longest prefix
    that matches a tensor's name wins, and tensors no prefix matches take ``weights``.
    """
    from hrtem3d.model.io import CALIBRATION_KEYS, load_model

    w = _normalised(weights, len(paths), "")
    per_layer = {k: _normalised(v, len(paths), f" for {k}") for k, v in (layers or {}).items()}
    nets = [load_model(p, device="cpu") for p in paths]
    base, meta = nets[0]
    if any(n[0].config != base.config for n in nets[1:]):
        raise SystemExit("the models differ in network configuration; a soup needs one architecture")
    states = [n[0].state_dict() for n in nets]
    unused = [k for k in per_layer if not any(name.startswith(k) for name in states[0])]
    if unused:
        raise SystemExit(f"no tensor of the network starts with {unused}; names start e.g. with "
                         f"{sorted({'.'.join(n.split('.')[:2]) + '.' for n in states[0]})[:6]}")
    mixed = {}
    for k, v in states[0].items():
        match = max((p for p in per_layer if k.startswith(p)), key=len, default=None)
        wk = w if match is None else per_layer[match]
        if v.is_floating_point():
            mixed[k] = sum(wi * s[k].double() for wi, s in zip(wk, states)).to(v.dtype)
        else:  # e.g. BatchNorm's num_batches_tracked
            mixed[k] = v
    base.load_state_dict(mixed)
    meta = {k: v for k, v in meta.items() if k not in ("unet", "package_version", *CALIBRATION_KEYS)}
    meta["temperature"] = sum(wi * float(m.get("temperature", 1.0)) for wi, (_, m) in zip(w, nets))
    for _, m in nets[1:]:
        for key in ("scope_envelope", "envelope_source"):
            if key in m and key not in meta:
                meta[key] = m[key]
    meta["soup"] = [{"model": p, "weight": wi} for p, wi in zip(paths, w)]
    if per_layer:
        meta["soup_layers"] = per_layer
    return base, meta


def main(argv: list[str] | None = None) -> None:
    from hrtem3d.model.io import save_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model files (*.safetensors) with one network configuration")
    ap.add_argument("--weights", help="comma-separated weights, one a model (default: equal)")
    ap.add_argument("--layer", action="append", default=[], metavar="PREFIX=W1,W2,...",
                    help="own weights for the tensors whose names start with PREFIX (repeatable)")
    ap.add_argument("--out", required=True, help="model file to write (*.safetensors)")
    a = ap.parse_args(argv)
    weights = [float(x) for x in a.weights.split(",")] if a.weights else [1.0] * len(a.models)
    layers = {}
    for item in a.layer:
        prefix, sep, ws = item.partition("=")
        if not sep or not prefix:
            raise SystemExit(f"--layer {item!r}: give PREFIX=W1,W2,... (e.g. down.0.=0,1)")
        layers[prefix] = [float(x) for x in ws.split(",")]
    model, meta = soup(a.models, weights, layers)
    save_model(a.out, model, meta)
    print(f"{a.out}: " + ", ".join(f"{s['weight']:.2f} x {s['model']}" for s in meta["soup"])
          + "".join(f"; {k}* {v}" for k, v in layers.items()))


if __name__ == "__main__":
    main()
