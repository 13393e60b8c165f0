"""Training: soft weighted loss, a short run that learns, checkpoint and resume, the model file."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hrtem3d.cli import app
from hrtem3d.errors import HrtemError
from hrtem3d.model.io import load_model, read_metadata
from hrtem3d.train.loop import TrainConfig, split_structures, train
from hrtem3d.train.loss import soft_weighted_ce

runner = CliRunner()


def test_soft_ce_matches_hard_ce_for_sharp_targets():
    logits = torch.randn(2, 5, 4, 4)
    cls = torch.randint(0, 5, (2, 4, 4))
    target = torch.stack([cls.float(), torch.ones(2, 4, 4)], 1)
    w = torch.ones(2, 4, 4)
    ref = torch.nn.functional.cross_entropy(logits, cls)
    assert soft_weighted_ce(logits, target, w).item() == pytest.approx(ref.item(), rel=1e-5)
    # weights shift the loss towards the heavy pixels
    w2 = w.clone()
    w2[0] = 10
    per_pixel = torch.nn.functional.cross_entropy(logits, cls, reduction="none")
    expect = (w2 * per_pixel).sum() / w2.sum()
    assert soft_weighted_ce(logits, target, w2).item() == pytest.approx(expect.item(), rel=1e-5)


def test_split_is_by_structure():
    train_idx, val_idx = split_structures(list(range(20)), 0.1)
    assert not set(train_idx) & set(val_idx)
    assert len(val_idx) == 2 and sorted(train_idx + val_idx) == list(range(20))


def _cfg(steps, lr=3e-2):
    return TrainConfig(steps=steps, batch=4, crop=64, widths=(4, 8), val_every=5, val_samples=4,
                       val_fraction=0.25, checkpoint_every=5, workers=0, lr=lr, warmup=2)


def test_short_run_learns_and_writes_a_model(tiny_store, tmp_path):
    out = tmp_path / "m.safetensors"
    m = train(tiny_store, out, _cfg(30), progress=False)
    meta = read_metadata(out)
    assert meta["scheme"]["species"] == ["Ce", "O"]
    assert meta["pixel_size_A"] == pytest.approx(0.16)
    assert meta["train_config"]["steps"] == 30
    hist = meta["history"]
    assert hist[-1]["step"] == 30 and m["step"] == 30
    # background is learned first: from nothing to most pixels within 30 steps, and the loss falls
    assert hist[0]["bg_acc"] < 0.5 < 0.8 < hist[-1]["bg_acc"]
    assert hist[-1]["loss"] < 0.85 * hist[0]["loss"]
    model, _ = load_model(out)
    assert model(torch.zeros(1, 1, 40, 40)).shape == (1, 25, 40, 40)


class _Scaled(torch.nn.Module):
    """A stand-in network whose logits are `scale` times its input (the true logits)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return self.scale * x


@pytest.mark.parametrize("scale", [0.7, 2.0])
def test_temperature_undoes_over_and_under_confidence(scale):
    """Labels drawn from softmax(L), logits scale * L: the NLL-optimal temperature is `scale`."""
    from hrtem3d.train.loop import fit_temperature

    g = torch.Generator().manual_seed(0)
    ds = []
    for _ in range(4):
        true = 2.0 * torch.randn(5, 64, 64, generator=g)
        cls = torch.multinomial(torch.softmax(true, 0).reshape(5, -1).T, 1, generator=g).reshape(64, 64)
        alpha = torch.ones(64, 64)
        alpha[:, 32:] = 0.5  # off the column cores: labels there are noise and must not count
        cls[:, 32:] = torch.randint(0, 5, (64, 32), generator=g)
        ds.append((true, torch.stack([cls.float(), alpha]), None))
    t = fit_temperature(_Scaled(scale), ds, torch.device("cpu"))
    assert abs(t - scale) <= 0.1 + 1e-9, t


def test_resume_continues_from_checkpoint(tiny_store, tmp_path):
    out = tmp_path / "r.safetensors"
    train(tiny_store, out, _cfg(10), progress=False)
    ckpt = out.with_name(out.name + ".ckpt")
    assert ckpt.exists()
    w10 = read_metadata(out)["history"]
    with pytest.raises(HrtemError, match="other settings.*lr"):
        train(tiny_store, out, _cfg(15, lr=1e-3), progress=False)
    # a checkpoint written before a setting existed (its default then) still resumes
    import json

    ck = torch.load(ckpt, weights_only=True)
    older = {k: v for k, v in json.loads(ck["config_json"]).items() if k not in ("lattice_heads", "gate_weight")}
    torch.save({**ck, "config_json": json.dumps(older)}, ckpt)
    m = train(tiny_store, out, _cfg(15), progress=False)
    hist = read_metadata(out)["history"]
    assert [h["step"] for h in hist] == [5, 10, 15] and m["step"] == 15
    assert hist[:2] == w10[:2]


def test_train_command_on_too_small_a_store_is_one_line(tiny_store, tmp_path):
    r = runner.invoke(app, ["train", str(tiny_store), "--out", str(tmp_path / "x.safetensors"), "--steps", "2",
                            "--no-progress"])
    assert r.exit_code == 2 and "simulate more" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.safetensors").exists()


def test_same_seed_same_weights(tiny_store, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    train(tiny_store, a, _cfg(3), progress=False)
    train(tiny_store, b, _cfg(3), progress=False)
    ma, _ = load_model(a)
    mb, _ = load_model(b)
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.allclose(va.float(), vb.float(), atol=1e-6), k
    assert np.isfinite(read_metadata(a)["history"][-1]["loss"])


def test_init_starts_from_the_given_weights_and_refuses_another_shape(tiny_store, tiny_model, tmp_path):
    base, _ = load_model(tiny_model, "cpu")
    cfg = TrainConfig(steps=1, batch=2, crop=64, widths=(4, 8), val_every=1, val_samples=2, val_fraction=0.25,
                      checkpoint_every=1, workers=0, warmup=1, lr=1e-9, init=str(tiny_model))
    train(tiny_store, tmp_path / "ft.safetensors", cfg, progress=False)
    tuned, meta = load_model(tmp_path / "ft.safetensors", "cpu")
    for k, v in base.state_dict().items():
        if v.dtype.is_floating_point and "running" not in k:
            assert torch.allclose(v, tuned.state_dict()[k], atol=1e-5), k
    assert meta["scope_envelope"]["pixel_size_A"] == [0.045, 0.16]
    scratch = TrainConfig(**{**cfg.__dict__, "init": None})
    train(tiny_store, tmp_path / "scratch.safetensors", scratch, progress=False)
    other, _ = load_model(tmp_path / "scratch.safetensors", "cpu")
    assert not torch.allclose(other.state_dict()["enc.0.0.weight"] if "enc.0.0.weight" in other.state_dict()
                              else next(iter(other.parameters())), next(iter(base.parameters())))
    bad = TrainConfig(**{**cfg.__dict__, "widths": (4, 8, 16)})
    with pytest.raises(HrtemError, match="`widths`"):
        train(tiny_store, tmp_path / "bad.safetensors", bad, progress=False)


def test_init_from_a_model_without_global_context_starts_it_as_the_identity(tiny_store, tiny_model, tmp_path):
    base, _ = load_model(tiny_model, "cpu")
    cfg = TrainConfig(steps=1, batch=2, crop=64, widths=(4, 8), val_every=1, val_samples=2, val_fraction=0.25,
                      checkpoint_every=1, workers=0, warmup=1, lr=1e-9, init=str(tiny_model), global_context=True)
    train(tiny_store, tmp_path / "gc.safetensors", cfg, progress=False)
    tuned, _ = load_model(tmp_path / "gc.safetensors", "cpu")
    assert tuned.config.global_context and tuned.context is not None
    for k, v in base.state_dict().items():
        if v.dtype.is_floating_point and "running" not in k:
            assert torch.allclose(v, tuned.state_dict()[k], atol=1e-5), k
    assert tuned.context.mlp[2].weight.abs().max() < 1e-6  # one step at lr 1e-9: still the identity


def test_killed_run_resumes_to_the_weights_of_an_unbroken_one(tiny_store, tmp_path, monkeypatch):
    import hrtem3d.train.loop as loop

    whole = tmp_path / "whole.safetensors"
    train(tiny_store, whole, _cfg(10), progress=False)
    out = tmp_path / "killed.safetensors"
    real, calls = loop.validate, []

    def killed_at_step_10(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C (or the OOM killer) after the step-5 checkpoint
        return real(*a, **k)

    monkeypatch.setattr(loop, "validate", killed_at_step_10)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_store, out, _cfg(10), progress=False)
    assert not out.exists() and out.with_name(out.name + ".ckpt").exists()
    monkeypatch.setattr(loop, "validate", real)
    m = train(tiny_store, out, _cfg(10), progress=False)
    assert m["step"] == 10 and [h["step"] for h in read_metadata(out)["history"]] == [5, 10]
    a, _ = load_model(whole)
    b, _ = load_model(out)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(va.float(), vb.float(), atol=1e-5), k  # resumed exactly where it stopped


def test_corrupt_checkpoint_is_a_one_line_error(tiny_store, tmp_path):
    out = tmp_path / "c.safetensors"
    out.with_name(out.name + ".ckpt").write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(HrtemError) as e:
        train(tiny_store, out, _cfg(5), progress=False)
    msg = str(e.value)
    assert "checkpoint" in msg and "unreadable" in msg and "delete it" in msg and "\n" not in msg, msg
    assert not out.exists()


def test_lattice_loss_trains_each_reading_only_on_its_own_kind_of_image():
    from hrtem3d.train.loss import lattice_hypotheses_loss

    torch.manual_seed(0)
    static, vibrating = torch.randn(3, 5, 4, 4, requires_grad=True), torch.randn(3, 5, 4, 4, requires_grad=True)
    gate = torch.zeros(3, requires_grad=True)
    cls = torch.randint(0, 5, (3, 4, 4))
    target, w = torch.stack([cls.float(), torch.ones(3, 4, 4)], 1), torch.ones(3, 4, 4)
    vibrates = torch.tensor([0.0, 1.0, 0.0])
    lattice_hypotheses_loss(static, vibrating, gate, vibrates, target, w).backward()
    assert static.grad[1].abs().max() == 0 and static.grad[[0, 2]].abs().max() > 0
    assert vibrating.grad[[0, 2]].abs().max() == 0 and vibrating.grad[1].abs().max() > 0
    # the gate is pushed towards each image's kind
    assert gate.grad[1] < 0 < gate.grad[0]
