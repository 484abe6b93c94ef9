"""HTML building blocks of the report and the comparison: escaping, numbers, tables, page.

Everything taken from run files goes through ``escape`` (tables do it for every cell);
only ``Markup`` built here passes through as HTML. The page carries its CSS inline and a
Content-Security-Policy that forbids any network fetch, so it renders the same offline.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from numbers import Real

# The browser refuses any request the page might make: styles and images must be inline.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
CSS = """
:root{--fg:#1d2330;--muted:#5b6474;--line:#dde1e8;--accent:#1f5fa0;--panel:#f5f6f8}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;
  color:var(--fg);background:#fff}
main{max-width:1240px;margin:0 auto;padding:18px 28px 48px}
h1{font-size:22px;margin:0 0 6px}
h2{font-size:18px;margin:30px 0 10px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:18px 0 6px}
nav{margin:8px 0 4px}
nav a{margin-right:16px;color:var(--accent);text-decoration:none}
.status{display:inline-block;padding:2px 10px;border-radius:12px;font-size:13px;
  font-weight:600;vertical-align:middle;margin-left:10px;background:#eceff3}
.status-finished{background:#e2f3e5;color:#1b6e2c}
.status-stopped-early{background:#fff4d6;color:#7a5a00}
.status-failed{background:#fde4e4;color:#a11d1d}
.status-interrupted,.status-interrupted-unfinished{background:#ffe9d6;color:#8a4300}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));
  gap:8px 12px;margin:12px 0}
.facts div{background:var(--panel);border-radius:6px;padding:6px 10px}
.facts dt{font-size:12px;color:var(--muted)}
.facts dd{margin:0;font-weight:600;overflow-wrap:anywhere}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:14px}
figure{margin:0 0 12px;border:1px solid var(--line);border-radius:6px;padding:6px;
  background:#fff}
figure.wide{max-width:880px}
figure.natural{width:fit-content;max-width:100%}
figure.natural svg.plot{width:auto;max-width:100%}
figcaption{font-size:12px;color:var(--muted);padding:2px 6px}
svg.plot{display:block;width:100%;height:auto}
svg.plot *{stroke-linejoin:round}
svg.plot text{font-family:"DejaVu Sans","Bitstream Vera Sans",Verdana,Arial,sans-serif}
.columns{display:flex;flex-wrap:wrap;gap:8px 36px;align-items:flex-start}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;margin:6px 0 14px}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{padding:3px 10px;border-bottom:1px solid var(--line);text-align:left}
thead th{background:var(--panel);font-weight:600}
td.num,thead th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.summary-row th,tr.summary-row td{font-weight:600}
tr.first-summary-row th,tr.first-summary-row td{border-top:2px solid #b8bec9}
table.matrix td{min-width:3em}
details{margin:8px 0}
summary{cursor:pointer;color:var(--accent)}
pre{background:var(--panel);padding:12px;border-radius:6px;overflow:auto;max-height:520px;
  font-size:12px}
.note{color:var(--muted)}
"""


class Markup(str):
    """HTML built by this package: passed through by ``table`` and ``page`` unescaped."""


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def format_number(value: object, *, digits: int = 4) -> str:
    """Fixed decimals for scores, exponent for very small or large values, ints as they are."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, Real):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1e6 or 0 < magnitude < 10 ** -(digits - 1):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}f}"


def format_fact(value: object) -> str:
    """Four significant digits for header values (1030, 0.001, 0.04), grouped when large."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return format_number(value)


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def cell(value: object, *, digits: int = 4) -> str:
    """One ``<td>``: numbers right-aligned with their full value in ``data-value``."""
    if isinstance(value, Markup):
        return f"<td>{value}</td>"
    if isinstance(value, Real) and not isinstance(value, bool):
        text = format_number(value, digits=digits)
        return f'<td class="num" data-value="{value!r}">{escape(text)}</td>'
    return f"<td>{escape(format_number(value))}</td>"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    table_id: str | None = None,
    caption: str | None = None,
    row_classes: Sequence[str] = (),
    digits: int = 4,
) -> Markup:
    """A table whose first column heads each row; every cell from a file is escaped."""
    head = "".join(
        f'<th scope="col"{" class=num" if index else ""}>{escape(text)}</th>'
        for index, text in enumerate(headers)
    )
    body = []
    for index, row in enumerate(rows):
        css = row_classes[index] if index < len(row_classes) else ""
        first = f'<th scope="row">{escape(row[0])}</th>'
        rest = "".join(cell(value, digits=digits) for value in row[1:])
        body.append(f'<tr class="{css}">{first}{rest}</tr>' if css else f"<tr>{first}{rest}</tr>")
    attributes = f' id="{escape(table_id)}"' if table_id else ""
    title = f"<caption>{escape(caption)}</caption>" if caption else ""
    return Markup(
        f"<div class=scroll><table{attributes}>{title}<thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def facts(items: Sequence[tuple[str, object]]) -> Markup:
    """Label/value tiles for the header (values escaped)."""
    tiles = "".join(
        f"<div><dt>{escape(label)}</dt><dd>{escape(format_fact(value))}</dd></div>"
        for label, value in items
    )
    return Markup(f'<dl class="facts">{tiles}</dl>')


def figure(
    svg: str, *, caption: str | None = None, wide: bool = False, natural: bool = False
) -> Markup:
    """A figure; ``natural`` keeps the SVG at its own size (never stretched to the width)."""
    text = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    css = ' class="natural"' if natural else ' class="wide"' if wide else ""
    return Markup(f"<figure{css}>{svg}{text}</figure>")


def section(section_id: str, title: str, body: Iterable[str]) -> Markup:
    return Markup(
        f'<section id="{escape(section_id)}"><h2>{escape(title)}</h2>{"".join(body)}</section>'
    )


def note(text: str) -> Markup:
    return Markup(f'<p class="note">{escape(text)}</p>')


def page(title: str, body: Iterable[str]) -> str:
    """The whole document: inline CSS, no scripts, no external resource."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
