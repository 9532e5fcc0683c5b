"""Render the report of a run folder: ``report.json``, Markdown, HTML and PNG charts.

The rows and ``report.json`` come from :mod:`gtsrb_kit.runs` (re-exported here); a report over a
partial sweep shows the missing runs as pending, running, interrupted or failed.
"""

from __future__ import annotations

import base64
import contextlib
import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gtsrb_kit.errors import ConfigError, DataError
from gtsrb_kit.fileio import write_text_atomic
from gtsrb_kit.plotting import plot_curves, pyplot, save_png
from gtsrb_kit.progress import ProgressCallback
from gtsrb_kit.progress import report as report_progress
from gtsrb_kit.runs import (  # noqa: F401 - the run summary, also importable from here
    REPORT_FORMAT, REPORT_JSON, ROW_FIELDS, best_per_dataset, build_report, collect_runs, read_history, read_json,
    committee_files, committee_folder, current_committee, seed_groups, update_report_json,
)

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
CHARTS_DIR = "charts"
ACCURACY_PNG = "accuracy.png"
CURVES_PNG = "learning_curves.png"

def runs_frame(run_dir: str | os.PathLike[str]) -> Any:
    """The report rows as a pandas DataFrame (one row per run, :data:`ROW_FIELDS` columns)."""
    import pandas as pd

    return pd.DataFrame(collect_runs(run_dir), columns=list(ROW_FIELDS))


# ----------------------------------------------------------------------------------------------
# Charts


def _pivot(rows: list[dict[str, Any]]) -> tuple[list[str], list[str], list[list[float | None]]]:
    """Datasets (rows) x model[/augment] (columns) of test accuracy (of the chosen run where seeds repeat)."""
    augments = {r["augment"] for r in rows}
    def col(r: dict[str, Any]) -> str:
        return f"{r['model']}" if len(augments) <= 1 else f"{r['model']}/{r['augment']}"
    datasets = list(dict.fromkeys(str(r["dataset"]) for r in rows))
    cols = list(dict.fromkeys(col(r) for r in rows))
    grid: list[list[float | None]] = [[None] * len(cols) for _ in datasets]
    chosen = _chosen_cells(rows, datasets, cols, col)
    for r in rows:
        i, j = datasets.index(str(r["dataset"])), cols.index(col(r))
        if r["test_accuracy"] is not None and r["status"] == "done" and (grid[i][j] is None or (i, j, r["run"]) in chosen):
            grid[i][j] = r["test_accuracy"]
    return datasets, cols, grid


def _chosen_cells(rows: list[dict[str, Any]], datasets: list[str], cols: list[str], col: Any) -> set[tuple[int, int, str]]:
    """(dataset row, column, run) of the run chosen by validation accuracy in every cell."""
    cells: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((datasets.index(str(r["dataset"])), cols.index(col(r))), []).append(r)
    return {(i, j, best) for (i, j), members in cells.items() for best in best_per_dataset(members).values()}


def plot_accuracy(rows: list[dict[str, Any]], out: str | os.PathLike[str]) -> Path | None:
    """Heat map of test accuracy, datasets x models (annotated; empty cells = not finished).

    Bold: the run chosen per dataset by validation accuracy (never by the test accuracy shown).

    Returns:
        The PNG path, or ``None`` when no run has finished.
    """
    if not any(r["status"] == "done" and r["test_accuracy"] is not None for r in rows):
        return None
    plt = pyplot()
    import numpy as np

    datasets, cols, grid = _pivot(rows)
    values = np.array([[np.nan if v is None else v for v in line] for line in grid], dtype=float)
    fig_w = max(4.0, 1.1 * len(cols) + 2.8)
    fig_h = max(2.2, 0.5 * len(datasets) + 1.4)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=100)
    cmap = plt.colormaps["viridis"].with_extremes(bad="#eeeeee")
    finite = values[np.isfinite(values)]
    vmin = float(finite.min()) if finite.size else 0.0
    vmax = float(finite.max()) if finite.size else 1.0
    if vmax - vmin < 1e-6:
        vmin = max(0.0, vmin - 0.05)
        vmax = min(1.0, vmax + 0.05) if vmax < 1 else 1.0
        vmin = min(vmin, vmax - 0.01)
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(datasets)), datasets)
    augments = {r["augment"] for r in rows}
    chosen = {str(r["dataset"]): (f"{r['model']}" if len(augments) <= 1 else f"{r['model']}/{r['augment']}")
              for r in rows if r["run"] in set(best_per_dataset(rows).values())}
    best_by_row = [cols.index(chosen[d]) if d in chosen else -1 for d in datasets]
    for i in range(len(datasets)):
        for j in range(len(cols)):
            v = values[i, j]
            text = "-" if not np.isfinite(v) else f"{v:.3f}"
            bright = np.isfinite(v) and (v - vmin) / max(vmax - vmin, 1e-9) > 0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="black" if bright or not np.isfinite(v) else "white",
                    fontweight="bold" if j == best_by_row[i] else "normal")
    ax.set_title("Test accuracy (bold: chosen per dataset by validation accuracy)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return save_png(fig, out)


def plot_learning_curves(run_dir: str | os.PathLike[str], runs: list[str], out: str | os.PathLike[str]) -> Path | None:
    """Accuracy per epoch (training dashed, validation solid) of the given runs, on one chart.

    Returns:
        The PNG path, or ``None`` when none of the runs has a history.
    """
    run_dir = Path(run_dir)
    histories = {name: read_history(run_dir / name) for name in runs}
    histories = {k: v for k, v in histories.items() if v.get("val_accuracy") or v.get("accuracy")}
    if not histories:
        return None
    return plot_curves(histories, out, keys=("accuracy",),
                       title="Learning curves of the best runs (solid: validation, dashed: training)")


# ----------------------------------------------------------------------------------------------
# Markdown and HTML

_COLUMNS = (
    ("run", "run"), ("status", "status"), ("dataset", "dataset"), ("model", "model"), ("augment", "augment"),
    ("best_val_accuracy", "best val acc"), ("test_accuracy", "test acc"), ("lowest_recall", "lowest recall"),
    ("corruption_accuracy", "GTSRB-C acc"), ("seed", "seed"), ("epochs_completed", "epochs"),
    ("duration_s", "duration (s)"), ("model_params", "params"), ("dataset_mb", "dataset MB"),
)


_NUMERIC = frozenset({"test_accuracy", "best_val_accuracy", "lowest_recall", "corruption_accuracy", "seed",
                      "epochs_completed", "duration_s", "model_params", "dataset_mb"})


def mean_std(mean: float | None, std: float | None, scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std`` (in percent by default), ``-`` without a mean."""
    if mean is None:
        return "-"
    return f"{mean * scale:.{digits}f}" + (f" ± {std * scale:.{digits}f}" if std is not None else "")


_GROUP_HEAD = ("recipe", "runs done", "seeds", "val acc %", "test acc %", "lowest recall %", "s per run",
               "committee test acc % (lowest recall %)", "with TTA")
_GROUP_NOTE = ("Mean ± sample standard deviation over the finished runs of each recipe; the committee is the mean "
               "of their probabilities (`gtsrb-kit report --committee [--tta]`).")


def _group_rows(report: dict[str, Any]) -> list[list[str]]:
    """The cells of the table of runs that differ only by seed (recipes with several runs only)."""
    return [[recipe_text(g["recipe"]), f"{g['done']}/{len(g['runs'])}", ", ".join(map(str, g["seeds"])),
             mean_std(g["best_val_accuracy_mean"], g["best_val_accuracy_std"]),
             mean_std(g["test_accuracy_mean"], g["test_accuracy_std"]),
             mean_std(g["lowest_recall_mean"], g["lowest_recall_std"]),
             mean_std(g["duration_s_mean"], g["duration_s_std"], 1.0, 0),
             committee_text(g.get("committee")), committee_text(g.get("committee_tta"))]
            for g in report.get("groups", []) if len(g["runs"]) > 1]


def committee_of_all_text(report: dict[str, Any]) -> str | None:
    """One sentence on the committee of all finished runs, ``None`` where there is none."""
    every = report.get("committee_of_all")
    if not every:
        return None
    return (f"Committee of all {len(every['runs'])} finished runs: {committee_text(every['committee'])}, "
            f"with TTA {committee_text(every['committee_tta'])}.")


def _group_lines(report: dict[str, Any]) -> list[str]:
    """The Markdown section of the runs that differ only by seed."""
    rows = _group_rows(report)
    if not rows:
        return []
    lines = ["", "## Over seeds", "", "| " + " | ".join(_GROUP_HEAD) + " |",
             "|---|---:|---|" + "---:|" * (len(_GROUP_HEAD) - 3)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    lines += ["", _GROUP_NOTE]
    every = committee_of_all_text(report)
    return lines + (["", every] if every else [])


def _group_html(report: dict[str, Any]) -> list[str]:
    """The HTML section of the runs that differ only by seed."""
    rows = _group_rows(report)
    if not rows:
        return []
    esc = html.escape
    parts = ["<h2>Over seeds</h2><table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in _GROUP_HEAD)
             + "</tr></thead><tbody>"]
    parts += ["<tr><td>" + esc(row[0]) + "</td>" + "".join(f'<td class="num">{esc(c)}</td>' for c in row[1:])
              + "</tr>" for row in rows]
    every = committee_of_all_text(report)
    return parts + ["</tbody></table>", f"<p>{esc(_GROUP_NOTE)}</p>"] + ([f"<p>{esc(every)}</p>"] if every else [])


def recipe_text(recipe: dict[str, Any]) -> str:
    """A seed group's recipe in one line: dataset, model, augmentation, then its other settings as
    training applies them (those of older versions as recorded)."""
    from gtsrb_kit.train import applied_settings

    main = ("dataset", "model", "augment")
    settings = {k: v for k, v in recipe.items() if k not in main}
    with contextlib.suppress(ConfigError, TypeError, ValueError):
        settings = applied_settings(recipe.get("model"), settings)
    rest = [f"{k}={v}" for k, v in sorted(settings.items())]
    return " ".join(str(recipe.get(k)) for k in main) + (", " + ", ".join(rest) if rest else "")


def committee_text(committee: dict[str, Any] | None) -> str:
    """``accuracy % (lowest recall %)`` of a committee, ``-`` when it was not evaluated."""
    if not committee or committee.get("accuracy") is None:
        return "-"
    low = committee.get("lowest_recall")
    return f"{committee['accuracy'] * 100:.2f}" + (f" ({low * 100:.2f})" if low is not None else "")


def format_cell(key: str, value: Any) -> str:
    """A row value as table text (accuracies with 4 decimals, sizes with 1, ``-`` for none)."""
    if value is None:
        return "-"
    if key in ("test_accuracy", "best_val_accuracy", "lowest_recall", "corruption_accuracy"):
        return f"{value:.4f}"
    if key in ("duration_s", "dataset_mb", "model_mb"):
        return f"{value:.1f}"
    if key == "model_params" and isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _markdown(report: dict[str, Any], charts: dict[str, Path]) -> str:
    rows = report["runs"]
    best = set(report["best_per_dataset"].values())
    lines = [f"# Sweep report: {report['name']}", ""]
    counts = ", ".join(f"{n} {s}" for s, n in report["counts"].items()) or "no runs"
    lines.append(f"{report['total']} runs: {counts}.")
    if report["best"]:
        b = next(r for r in rows if r["run"] == report["best"])
        lines.append(f"Chosen by validation accuracy: **{b['run']}** (validation {b['best_val_accuracy']:.4f}, "
                     f"test {b['test_accuracy']:.4f}).")
    lines += ["", "In **bold**: the run of each dataset chosen by validation accuracy (test accuracy never chooses).", ""]
    lines.append("| " + " | ".join(h for _, h in _COLUMNS) + " |")
    lines.append("|" + "|".join("---:" if k in _NUMERIC else "---"
                                 for k, _ in _COLUMNS) + "|")
    for r in rows:
        cells = [format_cell(k, r[k]).replace("|", "\\|") for k, _ in _COLUMNS]
        if r["run"] in best:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _group_lines(report)
    failed = [r for r in rows if r["error"]]
    if failed:
        lines += ["", "## Failed runs", ""]
        lines += [f"- `{r['run']}`: {r['error']}" for r in failed]
    if charts:
        lines += ["", "## Charts", ""]
        for title, path in charts.items():
            lines.append(f"![{title}]({CHARTS_DIR}/{path.name})")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.5em}
table{border-collapse:collapse;font-size:.9em}
th,td{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{font-weight:bold;background:#e8f5e9}
.status-done{color:#2e7d32}.status-failed{color:#c62828}.status-running{color:#1565c0}
.status-interrupted,.status-started{color:#ef6c00}.status-pending{color:#777}
img{max-width:100%;margin:.5em 0}
"""


def _html(report: dict[str, Any], charts: dict[str, Path]) -> str:
    rows = report["runs"]
    best = set(report["best_per_dataset"].values())
    esc = html.escape
    numeric = _NUMERIC
    parts = [
        "<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>Sweep report: {esc(str(report['name']))}</title>", f"<style>{_CSS}</style></head><body>",
        f"<h1>Sweep report: {esc(str(report['name']))}</h1>",
    ]
    counts = ", ".join(f"{n} {s}" for s, n in report["counts"].items()) or "no runs"
    parts.append(f"<p>{report['total']} runs: {esc(counts)}. Highlighted: the run of each dataset chosen by "
                 "validation accuracy (test accuracy never chooses).</p>")
    parts.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for _, h in _COLUMNS) + "</tr></thead><tbody>")
    for r in rows:
        cls = ' class="best"' if r["run"] in best else ""
        cells = []
        for k, _ in _COLUMNS:
            text = esc(format_cell(k, r[k]))
            if k == "status":
                cells.append(f'<td class="status-{esc(r[k])}">{text}</td>')
            elif k in numeric:
                cells.append(f'<td class="num">{text}</td>')
            else:
                cells.append(f"<td>{text}</td>")
        parts.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    parts += _group_html(report)
    failed = [r for r in rows if r["error"]]
    if failed:
        parts.append("<h2>Failed runs</h2><ul>")
        parts += [f"<li><code>{esc(r['run'])}</code>: {esc(str(r['error']))}</li>" for r in failed]
        parts.append("</ul>")
    for title, path in charts.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<h2>{esc(title)}</h2><img alt=\"{esc(title)}\" src=\"data:image/png;base64,{data}\">")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def evaluate_committees(run_dir: str | os.PathLike[str], *, tta: bool = False,
                        progress: ProgressCallback | None = None) -> list[Path]:
    """Evaluate the committee of every seed group with two or more finished runs (on the test split),
    and of all finished runs where they form several groups.

    Each committee is the mean of its members' probabilities (:func:`gtsrb_kit.evaluate.evaluate`),
    written to :func:`~gtsrb_kit.runs.committee_folder`; reports show it beside the group's mean.
    The committee of all is skipped when its runs were cooked from different sources (their test
    splits differ). Each model is predicted once; a committee evaluated after its members' models
    and data files last changed is kept; ``progress`` is told of each committee done. Returns the
    ``evaluation.json`` files written.
    """
    from gtsrb_kit.evaluate import evaluate

    run_dir = Path(run_dir)
    report = build_report(run_dir)
    rows = {r["run"]: r for r in report["runs"]}
    wanted = [(group["recipe"], [rows[n] for n in group["runs"]]) for group in report["groups"]]
    if report["committee_of_all"]:
        wanted.append((None, [rows[n] for n in report["committee_of_all"]["runs"]]))
    written, cache = [], {}
    files = [(recipe, *committee_files(run_dir, group)) for recipe, group in wanted]
    committees = [(recipe, models, data) for recipe, models, data in files if len(models) >= 2]
    label = "committees with TTA" if tta else "committees"
    for count, (recipe, models, data) in enumerate(committees):
        report_progress(progress, label, count, len(committees))
        if current_committee(run_dir, recipe, models, data, tta) is not None:
            continue
        out = committee_folder(run_dir, recipe, tta)
        try:
            evaluate(models, data, out_dir=out, tta=tta, cache=cache)
        except DataError:
            if recipe is not None:
                raise
            continue
        written.append(out / "evaluation.json")
    report_progress(progress, label, len(committees), len(committees))
    update_report_json(run_dir)
    return written


@dataclass
class ReportFiles:
    """Files written by :func:`write_report` (charts are ``None`` when there was nothing to plot)."""

    report: dict[str, Any]
    json: Path
    markdown: Path
    html: Path
    accuracy_chart: Path | None
    curves_chart: Path | None


def write_report(
    run_dir: str | os.PathLike[str], *, out_dir: str | os.PathLike[str] | None = None, max_curves: int = 8,
) -> ReportFiles:
    """Write the full report of a run folder.

    Files: ``report.json`` (in ``run_dir``, under the lock), and in ``out_dir`` (default
    ``run_dir``): ``report.md``, ``report.html`` (self-contained: inline CSS, charts as base64
    PNG) and ``charts/accuracy.png`` / ``charts/learning_curves.png`` (the best run of each
    dataset, at most ``max_curves`` of them). Works on partial sweeps.

    Raises:
        DataError: ``run_dir`` does not exist.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such run folder; run 'gtsrb-kit sweep PLAN --run-dir {run_dir}' first")
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = update_report_json(run_dir)
    report = read_json(json_path) or build_report(run_dir)
    rows = report["runs"]
    charts_dir = out_dir / CHARTS_DIR
    charts: dict[str, Path] = {}
    acc = plot_accuracy(rows, charts_dir / ACCURACY_PNG)
    if acc:
        charts["Test accuracy by dataset and model"] = acc
    best_runs = list(report["best_per_dataset"].values())[:max_curves]
    curves = plot_learning_curves(run_dir, best_runs, charts_dir / CURVES_PNG)
    if curves:
        charts["Learning curves of the best runs"] = curves
    md = out_dir / REPORT_MD
    write_text_atomic(md, _markdown(report, charts))
    page = out_dir / REPORT_HTML
    write_text_atomic(page, _html(report, charts))
    return ReportFiles(report, json_path, md, page, acc, curves)
