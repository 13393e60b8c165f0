"""Forward-pass speed of candidate networks on CPU, against the project's reference U-Net.

Prints a markdown table: for each candidate and input size (512^2, 1024^2), the median
wall time of a forward pass under ``torch.inference_mode()`` after warm-up, seconds per
frame, parameters, GFLOPs per frame and the per-frame time relative to the reference
(plain 4-level 16-32-64-128 U-Net, 12 classes) at the same size. Then tries
``torch.compile`` on the reference in a subprocess with a time limit.

    .venv/bin/python benchmarks/bench_model_forward.py [--sizes 512 1024] [--repeats 5]

Runs in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from hrtem3d.model.unet import UNet, UNetConfig, count_flops, count_parameters, fold_batchnorm, plain_unet_reference

THREADS = 2


@dataclass
class Candidate:
    """One row group of the table: a network and how it is run."""

    name: str
    variant: str
    build: Callable[[], nn.Module]
    threads: int = THREADS
    batch: int = 1
    channels_last: bool = False
    reference: bool = False


def candidates() -> list[Candidate]:
    ref = plain_unet_reference
    return [
        Candidate("reference 16-32-64-128", "bilinear up (default)", ref, reference=True),
        Candidate(
            "reference 16-32-64-128",
            "ConvTranspose up",
            lambda: UNet(UNetConfig(n_classes=12, upsample="transpose")),
        ),
        Candidate("reference 16-32-64-128", "channels_last", ref, channels_last=True),
        Candidate("reference 16-32-64-128", "BN folded into conv", lambda: fold_batchnorm(ref())),
        Candidate("reference 16-32-64-128", "1 thread", ref, threads=1),
        Candidate("reference 16-32-64-128", "batch of 4 frames", ref, batch=4),
        Candidate("8-16-32-64", "", lambda: UNet(UNetConfig(n_classes=12, widths=(8, 16, 32, 64)))),
        Candidate("12-24-48-96", "", lambda: UNet(UNetConfig(n_classes=12, widths=(12, 24, 48, 96)))),
        Candidate("16-32-64 (3 levels)", "", lambda: UNet(UNetConfig(n_classes=12, widths=(16, 32, 64)))),
        Candidate("default UNetConfig (25 classes)", "", lambda: UNet(UNetConfig())),
        Candidate("16-32-64-128 residual", "25 classes", lambda: UNet(UNetConfig(residual=True))),
    ]


def time_forward(model: nn.Module, x: torch.Tensor, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``model(x)`` under inference mode."""
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _once(model: nn.Module, x: torch.Tensor, threads: int = THREADS) -> float:
    """Seconds of one ``model(x)`` under inference mode with ``threads`` threads."""
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            t0 = time.perf_counter()
            model(x)
            return time.perf_counter() - t0
    finally:
        torch.set_num_threads(THREADS)


def run_table(sizes: list[int], repeats: dict[int, int]) -> list[dict]:
    """Time every candidate at every size.

    The machine may be shared, so candidates are timed round-robin: each round runs
    every candidate once (reference included), and a candidate's ratio is the median
    over rounds of its per-frame time divided by the reference's time in the same
    round; load that drifts during the benchmark largely cancels out.
    """
    cands = candidates()
    torch.manual_seed(0)
    models = [c.build().eval() for c in cands]
    for cand, model in zip(cands, models, strict=True):
        if cand.channels_last:
            model.to(memory_format=torch.channels_last)
    i_ref = next(i for i, c in enumerate(cands) if c.reference)
    rows: list[dict] = []
    for size in sizes:
        inputs = []
        for cand in cands:
            x = torch.randn(cand.batch, 1, size, size)
            if cand.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            inputs.append(x)
        times: list[list[float]] = [[] for _ in cands]
        for r in range(1 + repeats[size]):  # round 0 is the warm-up
            order = range(len(cands)) if r % 2 else range(len(cands) - 1, -1, -1)
            for i in order:
                times[i].append(_once(models[i], inputs[i], cands[i].threads))
            print(f"{size}² round {r}: reference {times[i_ref][-1]:.3f} s", file=sys.stderr, flush=True)
        times = [ts[1:] for ts in times]  # drop the warm-up round
        ref_times = times[i_ref]
        for i, (cand, model) in enumerate(zip(cands, models, strict=True)):
            t = statistics.median(times[i])
            ratios = [tc / cand.batch / tr for tc, tr in zip(times[i], ref_times, strict=True)]
            rows.append(
                {
                    "order": i,
                    "network": cand.name,
                    "variant": cand.variant,
                    "size": size,
                    "batch": cand.batch,
                    "threads": cand.threads,
                    "median_s": t,
                    "s_per_frame": t / cand.batch,
                    "params": count_parameters(model),
                    "gflops": count_flops(model, (1, 1, size, size)) / 1e9,
                    "ratio": statistics.median(ratios),
                }
            )
    rows.sort(key=lambda r: (r["order"], r["size"]))
    return rows


def print_table(rows: list[dict]) -> None:
    cols = ["network", "variant", "size", "batch", "threads", "median s", "s/frame", "params"]
    print("| " + " | ".join([*cols, "GFLOPs/frame", "ratio"]) + " |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['network']} | {r['variant']} | {r['size']}² | {r['batch']} | {r['threads']} "
            f"| {r['median_s']:.3f} | {r['s_per_frame']:.3f} | {r['params']:,} | {r['gflops']:.1f} "
            f"| {r['ratio']:.2f} |"
        )


def compile_worker(sizes: list[int], repeats: dict[int, int]) -> None:
    """Runs in a subprocess: compile the reference and time it; one JSON line per size."""
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    model = plain_unet_reference().eval()
    compiled = torch.compile(model, dynamic=False)
    for size in sizes:
        x = torch.randn(1, 1, size, size)
        t0 = time.perf_counter()
        with torch.inference_mode():
            compiled(x)
        compile_s = time.perf_counter() - t0
        eager = time_forward(model, x, repeats[size])
        t = time_forward(compiled, x, repeats[size])
        row = {"size": size, "compile_s": compile_s, "compiled_s": t, "eager_s": eager}
        print(json.dumps(row), flush=True)


def try_compile(sizes: list[int], repeats: dict[int, int], timeout: float) -> None:
    print(f"\ntorch.compile (inductor) on the reference, 1 frame, {THREADS} threads, limit {timeout:.0f} s:")
    cmd = [sys.executable, __file__, "--compile-worker", "--sizes", *map(str, sizes)]
    cmd += ["--repeats", str(repeats[min(sizes)])]
    t0 = time.perf_counter()
    # own process group, so that inductor's compile workers go too if we give up
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, _ = proc.communicate()
        print(f"- gave up after {timeout:.0f} s (compilation too slow on this CPU); partial: {stdout.strip()!r}")
        return
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 and not lines:
        err = (stderr.strip().splitlines() or ["(no message)"])[-1]
        print(f"- failed (exit {proc.returncode}): {err}")
        return
    print("| size | compile s (first call) | eager s | compiled s | compiled / eager |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for ln in lines:
        r = json.loads(ln)
        print(
            f"| {r['size']}² | {r['compile_s']:.1f} | {r['eager_s']:.3f} | {r['compiled_s']:.3f} "
            f"| {r['compiled_s'] / r['eager_s']:.2f} |"
        )
    if proc.returncode != 0:
        err = (stderr.strip().splitlines() or ["(no message)"])[-1]
        print(f"- then failed (exit {proc.returncode}): {err}")
    print(f"- total {time.perf_counter() - t0:.0f} s including process start")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats at the smallest size")
    ap.add_argument("--compile-timeout", type=float, default=180.0)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    smallest = min(args.sizes)
    # fewer repeats for larger frames (>= 3), so that the whole run stays within minutes
    repeats = {s: max(3, round(args.repeats * smallest**2 / s**2)) for s in args.sizes}
    if args.compile_worker:
        compile_worker(args.sizes, repeats)
        return
    torch.set_num_threads(THREADS)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{THREADS} threads unless stated, median of "
        + ", ".join(f"{n} repeats at {s}²" for s, n in repeats.items())
        + " after 1 warm-up round, candidates run round-robin; "
        "ratio = median over rounds of (s/frame / reference s/frame in the same round)\n"
    )
    t0 = time.perf_counter()
    rows = run_table(args.sizes, repeats)
    print_table(rows)
    print(f"\ntable: {time.perf_counter() - t0:.0f} s")
    if not args.no_compile:
        try_compile(args.sizes, repeats, args.compile_timeout)


if __name__ == "__main__":
    main()
