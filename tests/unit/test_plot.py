"""`pretrain plot`: a real PNG with four panels from a metrics.csv, and an actionable error without one."""

from __future__ import annotations

import argparse
import csv
import math
import struct

import matplotlib
import pytest

from pretrain import plot
from pretrain.errors import PretrainError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# On a machine whose matplotlib has no font cache yet (a fresh CI runner), the first import of pyplot runs
# `fc-list` to build it. Do that here, at collection, outside the unit tier's no-process guard.
matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: E402,F401


def _write_metrics(path, steps: int = 30) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss", "perplexity", "lr", "grad_norm", "tokens_per_s", "mfu", "val_loss"])
        for step in range(1, steps + 1):
            loss = 8.0 * math.exp(-step / 20) + 2.0
            lr = 3e-4 * min(1.0, step / 5)
            val = loss + 0.1 if step % 10 == 0 else ""
            writer.writerow([step, loss, math.exp(loss), lr, 1.0, 1000 + step, "", val])


def _png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_MAGIC
    return struct.unpack(">II", header[16:24])


def test_plot_writes_png_with_four_panels(tmp_path, capsys, monkeypatch):
    _write_metrics(tmp_path / "metrics.csv")
    import matplotlib.figure

    drawn = {}

    original = matplotlib.figure.Figure.savefig

    def spy(fig, *args, **kwargs):
        drawn["titles"] = [ax.get_title() for ax in fig.axes]
        drawn["points"] = [[len(line.get_xdata()) for line in ax.lines] for ax in fig.axes]
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    rc = plot.run(argparse.Namespace(run=tmp_path, output=None))
    assert rc == 0
    out = tmp_path / "plot.png"
    assert capsys.readouterr().out.strip() == str(out)
    width, height = _png_size(out)
    assert (width, height) == (1100, 700)
    assert drawn["titles"] == [label for _, label, _ in plot.PANELS]
    assert drawn["points"] == [[30, 3], [30], [30], [30]]  # validation every 10 steps over the training loss


def test_blank_cells_are_skipped_not_plotted_as_zero(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,loss,perplexity,lr,tokens_per_s\n1,5,148.4,0.1,10\n2,,,0.2,\n3,4,54.6,0.3,12\n")
    metrics = plot.columns_to_plot(tmp_path)
    assert math.isnan(metrics["loss"][1]) and metrics["loss"][2] == 4.0
    plot.plot_metrics(metrics, tmp_path / "p.png", "t")
    assert _png_size(tmp_path / "p.png")[0] > 0


def test_missing_metrics_file_is_an_error(tmp_path):
    with pytest.raises(PretrainError, match=r"metrics\.csv: no metrics file"):  # `pretrain plot` exits 2 on it
        plot.run(argparse.Namespace(run=tmp_path, output=None))
    assert not (tmp_path / "plot.png").exists()


def test_missing_column_is_named(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,loss\n1,2.0\n")
    with pytest.raises(PretrainError, match="perplexity"):
        plot.columns_to_plot(tmp_path)


def test_plotted_columns_are_ones_the_trainer_writes():
    from pretrain.metrics import CSV_COLUMNS

    assert {"step"} | {column for column, _, _ in plot.PANELS} <= set(CSV_COLUMNS)


def test_read_metrics_gives_floats_and_leaves_blank_cells_out(tmp_path):
    from pretrain.metrics import read_metrics

    (tmp_path / "metrics.csv").write_text("step,loss,val_loss\n1,5.5,\n2,,4.25\n")
    assert read_metrics(tmp_path) == [{"step": 1.0, "loss": 5.5}, {"step": 2.0, "val_loss": 4.25}]
