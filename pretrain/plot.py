"""`pretrain plot RUN`: loss, perplexity, learning rate and throughput from RUN/metrics.csv in one PNG.

A run folder on a cluster is usually read over ssh; one image that shows divergence, LR schedule and a throughput
drop side by side answers "is this run healthy?" without starting tensorboard.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from pretrain.errors import PretrainError
from pretrain.metrics import read_metrics

PANELS = (
    ("loss", "training loss", "linear"),
    ("perplexity", "perplexity", "log"),
    ("lr", "learning rate", "linear"),
    ("tokens_per_s", "throughput (tokens/s)", "linear"),
)

# Evaluation columns drawn as markers over the training curve of the same panel, when the run logged them.
OVERLAYS = {"loss": "val_loss", "perplexity": "val_perplexity"}


def columns_to_plot(run_dir: Path) -> dict[str, list[float]]:
    """The plotted columns of RUN/metrics.csv, one float per row; NaN where a row logged no value (eval-only rows)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        raise PretrainError(f"{path}: no metrics file; is this a run folder written by `pretrain.train`?")
    rows = read_metrics(run_dir)
    if not rows:
        raise PretrainError(f"{path}: no rows yet; plot again after the first logged step")
    logged = {column for row in rows for column in row}
    needed = ["step"] + [name for name, _, _ in PANELS]
    missing = [c for c in needed if c not in logged]
    if missing:
        raise PretrainError(f"{path}: missing column(s) {missing}; found {sorted(logged)}")
    optional = [c for c in OVERLAYS.values() if c in logged]
    return {c: [row.get(c, math.nan) for row in rows] for c in needed + optional}


def plot_metrics(metrics: dict[str, list[float]], out: Path, title: str) -> Path:
    """Draw the four panels (2x2) against step and save a PNG with the Agg backend (no display needed)."""
    # imported here, not at the top: pyplot only after the Agg backend is chosen, and only by a plot that is drawn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for ax, (column, label, scale) in zip(axes.flat, PANELS, strict=True):
        points = [(s, v) for s, v in zip(metrics["step"], metrics[column], strict=True) if math.isfinite(v)]
        ax.plot([s for s, _ in points], [v for _, v in points], linewidth=1.2, label="train")
        _overlay(ax, metrics, OVERLAYS.get(column))
        ax.set_title(label)
        ax.set_yscale(scale if all(v > 0 for _, v in points) else "linear")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _overlay(ax, metrics: dict[str, list[float]], column: str | None) -> None:
    """Validation points (logged every train.eval_interval steps) as markers, with a legend."""
    values = metrics.get(column or "", [])
    points = [(s, v) for s, v in zip(metrics["step"], values, strict=False) if math.isfinite(v)]
    if points:
        ax.plot([s for s, _ in points], [v for _, v in points], "o", markersize=4, label="validation")
        ax.legend(loc="best", fontsize=8)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="run folder holding metrics.csv")
    parser.add_argument("--output", type=Path, default=None, help="PNG path (default RUN/plot.png)")


def run(args: argparse.Namespace) -> int:
    metrics = columns_to_plot(args.run)
    out = plot_metrics(metrics, args.output or args.run / "plot.png", title=str(args.run))
    print(out)
    return 0
