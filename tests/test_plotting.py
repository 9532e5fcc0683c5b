"""Learning curves: the loss/accuracy panels and the log-scale error-rate panel."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from gtsrb_kit.plotting import plot_curves

HISTORY = {"epoch": [1, 2, 3], "loss": [2.0, 1.0, 0.5], "val_loss": [2.1, 1.2, 0.7],
           "accuracy": [0.5, 0.9, 0.99], "val_accuracy": [0.6, 0.95, 1.0]}


def test_error_rate_panel_is_added(tmp_path: Path) -> None:
    # A perfect epoch (val_accuracy 1.0) must not break the log axis: it is drawn at the floor.
    with_error = plot_curves({"run": HISTORY}, tmp_path / "a.png", title="t")
    without = plot_curves({"run": HISTORY}, tmp_path / "b.png", error_rate=False)
    assert Image.open(with_error).width == 1500 and Image.open(without).width == 1000


def test_error_rate_panel_needs_accuracy(tmp_path: Path) -> None:
    only_loss = plot_curves({"run": HISTORY}, tmp_path / "c.png", keys=("loss",))
    assert Image.open(only_loss).width == 750  # one panel, no error panel
    report_like = plot_curves({"a": HISTORY, "b": HISTORY}, tmp_path / "d.png", keys=("accuracy",))
    assert Image.open(report_like).width == 1000
