"""Evaluation figures: accuracy against dose, confusion matrix, reliability diagram."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def accuracy_vs_dose(summary: pd.DataFrame) -> Figure:
    """Exact Ce/O depth accuracy of the network and the baselines against dose."""
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    styles = [("Ce_exact", "network, Ce", "C0", "-o"), ("O_exact", "network, O", "C1", "-o"),
              ("Ce_gauss_exact", "intensity counting, Ce", "C0", "--s"),
              ("Ce_majority_exact", "majority depth, Ce", "C0", ":^"), ("recall", "detection recall", "k", "-.")]
    for key, label, color, fmt in styles:
        if key in summary:
            ax.plot(summary.dose, summary[key], fmt, color=color, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("dose (e/Å²)")
    ax.set_ylabel("fraction of true columns")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    return fig


def confusion_figure(cols: pd.DataFrame, species: str = "Ce", max_atoms: int = 12) -> Figure:
    """Row-normalised confusion matrix of true vs predicted atoms for matched columns of `species`."""
    g = cols[(cols.species == species) & (cols.pred_row >= 0) & (cols.pred_species == species)]
    m = np.zeros((max_atoms, max_atoms))
    for t, p in zip(g.n_atoms.clip(1, max_atoms), g.pred_n.clip(1, max_atoms)):
        m[int(t) - 1, int(p) - 1] += 1
    norm = m / m.sum(1, keepdims=True).clip(1)
    fig = Figure(figsize=(5, 4.4), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, origin="lower",
                   extent=(0.5, max_atoms + 0.5, 0.5, max_atoms + 0.5))
    ax.set_xlabel("predicted atoms")
    ax.set_ylabel("true atoms")
    ax.set_title(f"{species} columns, all doses")
    fig.colorbar(im, ax=ax, label="fraction of row")
    return fig


def reliability_figure(table: pd.DataFrame, ece: float) -> Figure:
    """Reliability diagram from `analyze.evaluate.reliability` output."""
    fig = Figure(figsize=(4.5, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.bar(table.confidence, table.accuracy, width=0.08, alpha=0.7, edgecolor="k")
    ax.set_xlabel("column confidence")
    ax.set_ylabel("fraction correct")
    ax.set_title(f"reliability, ECE = {ece:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    return fig


def reliability_curves(groups: dict[str, tuple[np.ndarray, np.ndarray]], bins: int = 10) -> Figure:
    """Reliability diagrams of several image sets in one figure: `groups` maps a label to
    (confidence, correct) arrays over its columns. Left: fraction correct against confidence per bin
    (bins with fewer than 20 columns left out), the diagonal being perfect calibration; right: how
    many columns fall in each bin. The legend gives each set's ECE and accuracy.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> c = rng.uniform(0, 1, 2000)
        >>> fig = reliability_curves({"calibrated": (c, rng.uniform(size=2000) < c)})
        >>> len(fig.axes)
        2
    """
    from hrtem3d.evaluate.metrics import expected_calibration_error, reliability

    fig = Figure(figsize=(9.5, 4.2), layout="constrained")
    ax, hx = fig.subplots(1, 2, width_ratios=(1.3, 1))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    edges = np.linspace(0, 1, bins + 1)
    for i, (label, (conf, correct)) in enumerate(groups.items()):
        conf, correct = np.asarray(conf, float), np.asarray(correct, bool)
        if not len(conf):
            continue
        t = reliability(conf, correct, bins=bins)
        t = t[t["count"] >= 20]
        ece = expected_calibration_error(conf, correct)
        ax.plot(t.confidence, t.accuracy, "-o", ms=4, color=f"C{i}",
                label=f"{label}: ECE {ece:.2f}, {correct.mean():.0%} right")
        hx.stairs(np.histogram(conf, edges)[0] / len(conf), edges, color=f"C{i}", lw=1.5)
    ax.set_xlabel("reported column confidence")
    ax.set_ylabel("fraction of Ce columns with the exact count")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    hx.set_xlabel("reported column confidence")
    hx.set_ylabel("share of the set's columns")
    hx.set_xlim(0, 1)
    return fig
