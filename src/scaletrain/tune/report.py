"""report.html of a study: optimization history, parameter importances, parallel
coordinates and slice plots (Optuna's matplotlib plots as inline PNGs: no network), and the
trials table."""

from __future__ import annotations

import base64
import html
import io
import warnings

from scaletrain.fileio import atomic_write_text
from scaletrain.tune.study import StudyDir, StudySettings

PLOTS = (
    ("Optimization history", "plot_optimization_history"),
    ("Parameter importances", "plot_param_importances"),
    ("Parallel coordinates", "plot_parallel_coordinate"),
    ("Slices", "plot_slice"),
    ("Intermediate values (pruning)", "plot_intermediate_values"),
)


def write_report(study, study_dir: StudyDir, settings: StudySettings, rows: list[dict]) -> None:
    sections = [_plot_section(study, title, name) for title, name in PLOTS]
    best = next((r for r in rows if r["state"] == "complete" and r["value"] is not None), None)
    if best is not None:
        pick = max if settings.mode == "max" else min
        best = pick((r for r in rows if r["state"] == "complete"), key=lambda r: r["value"])
    summary = (
        f"{len(rows)} trials; best {settings.metric} = {best['value']:.6g} (trial {best['number']})"
        if best
        else f"{len(rows)} trials; none completed"
    )
    page = _PAGE.format(
        title=html.escape(str(study_dir.root)),
        summary=html.escape(summary),
        settings=html.escape(
            f"sampler {settings.sampler}, pruner {settings.pruner}, {settings.mode} "
            f"{settings.metric}, parallel {settings.parallel}, trial nproc {settings.trial_nproc}"
        ),
        sections="\n".join(sections),
        table=_table(rows),
    )
    atomic_write_text(study_dir.report, page)


def _plot_section(study, title: str, name: str) -> str:
    """One plot as an inline PNG, or a line saying why it is not drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks these plots experimental
            axes = getattr(optuna_plots, name)(study)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return f"<h2>{title}</h2><p>not drawn: {html.escape(str(exc))}</p>"
    figure = _figure_of(axes)
    if figure is None:
        return f"<h2>{title}</h2><p>not drawn: no data</p>"
    width, height = figure.get_size_inches()
    figure.set_size_inches(max(width, 10), max(height, 5))  # room for many axes' labels
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<h2>{title}</h2><img alt="{title}" src="data:image/png;base64,{data}">'


def _figure_of(axes):
    if hasattr(axes, "figure"):
        return axes.figure
    flat = getattr(axes, "flat", None)
    for ax in flat if flat is not None else []:
        return ax.figure
    return None


def _table(rows: list[dict]) -> str:
    keys = sorted({key for row in rows for key in row["params"]})
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["#", "state", "value", "s", *keys])
    body = []
    for row in rows:
        value = "" if row["value"] is None else f"{row['value']:.6g}"
        cells = [row["number"], row["state"], value, row["duration_s"] or ""]
        cells += [_short(row["params"].get(key, "")) for key in keys]
        body.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tune: {title}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}
img{{max-width:100%}}</style></head>
<body><h1>Study {title}</h1><p>{summary}</p><p>{settings}</p>
{sections}
<h2>Trials</h2>{table}
</body></html>
"""
