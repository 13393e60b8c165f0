"""Turn a training checkpoint (`OUT.ckpt` of `hrtem3d train`) into a model file, to measure a run mid-way.

The weights come from the checkpoint; the metadata from the shipped model (class scheme, pixel size),
with the run's input normalisation, class weights, configuration and history. The result is
uncalibrated (no confidence map and no detection thresholds, so every peak is kept): run `hrtem3d
calibrate` on it before reading its confidences or its recall and precision. (Until 2026-12-05 the
shipped model's detection thresholds were kept by mistake: snapshots measured before then were read
with v2's Ce 0.85 / O 0.80.)

    .venv/bin/python benchmarks/ckpt_to_model.py run.safetensors.ckpt snapshot.safetensors --data train.zarr
"""

from __future__ import annotations

import argparse
import json

import torch


def main(argv: list[str] | None = None) -> None:
    from hrtem3d.model.io import CALIBRATION_KEYS, load_default_model, save_model
    from hrtem3d.train.loop import training_class_weights

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="OUT.ckpt written by `hrtem3d train`")
    ap.add_argument("out", help="model file to write (*.safetensors)")
    ap.add_argument("--data", required=True, help="the store the run trained on (for its class weights)")
    a = ap.parse_args(argv)
    model, meta = load_default_model("cpu")
    ck = torch.load(a.checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(ck["model"])
    cfg = json.loads(ck["config_json"])
    meta = {k: v for k, v in meta.items() if k not in ("unet", "package_version", *CALIBRATION_KEYS)}
    meta.update(normalization=cfg.get("normalization", meta.get("normalization")), train_config=cfg,
                class_weights=training_class_weights(a.data, cfg).tolist(), history=json.loads(ck["history_json"]))
    save_model(a.out, model, meta)
    print(f"step {ck['step']} -> {a.out}")


if __name__ == "__main__":
    main()
