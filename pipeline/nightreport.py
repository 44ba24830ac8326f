"""A night at a glance: `reports/date=D/index.html`, and a trend over a range of nights.

One self-contained page (no network: pictures are inline PNG, styles inline) drawn from the nights'
`summary.json` files alone (`pipeline/drift.py`), never from predictions: first what it must warn of (a
night that scored no rows); rows read, kept and quarantined by reason against the last `report.nights`
nights; the predicted class mix against the model's validation predictions; the distribution of `score`
and the share below `report.confidence`; the drift (PSI) of every night as a trend, flagged nights in
red; the model version, linked to its card. Every figure on the page carries its value in a `data-value`
attribute (the browser test reads them). Labels, like every string, are data: escaped in the HTML, plain
text in the pictures. Same summaries, same bytes.

    pipeline report --date 2026-01-04                 -> reports/date=2026-01-04/index.html
    pipeline report --start 2026-01-01 --end 2026-01-31 -> reports/range=2026-01-01_2026-01-31/index.html
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
import numpy as np

from pipeline import drift, lake
from pipeline.config import ReportConfig
from pipeline.errors import PipelineError
from pipeline.report import plain_text

PAGE = "index.html"
_KEPT, _REF, _NOW, _BAD = "#4c72b0", "#999999", "#dd8452", "#c44e52"


def summaries(data: lake.DataDir, start: str, end: str) -> list[dict[str, Any]]:
    """The summaries of the nights in [start, end] that have one, in date order."""
    out = []
    for date in lake.date_range(start, end):
        s = drift.read_summary(data, date)
        if s is not None:
            out.append(s)
    return out


def write_night_report(data: lake.DataDir, date: str, cfg: ReportConfig) -> Path:
    """The page of `date` (its summary must exist: `drift.summarize_night` writes it)."""
    night = drift.read_summary(data, date)
    if night is None:
        msg = f"{drift.summary_path(data, date)}: no summary; hint: `pipeline report --date {date}` writes it"
        raise PipelineError(msg)
    first = (dt.date.fromisoformat(date) - dt.timedelta(days=cfg.nights - 1)).isoformat()
    window = lake.date_range(first, date)
    history = summaries(data, first, date)
    card = f"../../models/{night['model_version']}/card.md"
    body = [
        f"<h1>Night of {_e(date)}</h1>",
        *_status(night, cfg),
        f'<p>Scored with model <a href="{_e(card)}" data-figure="model_version" '
        f'data-value="{_e(night["model_version"])}">{_e(night["model_version"])}</a> '
        f"(its card) at {_e(str(night.get('scored_at')))}.</p>",
        "<h2>Rows</h2>",
        _night_table(night, cfg),
        _img(_plot_rows(window, history, date), f"rows read, kept and quarantined, last {cfg.nights} nights"),
        "<h2>Predicted classes</h2>",
        _img(_plot_classes(night), "class mix tonight and in the model's validation predictions"),
        _class_table(night),
        "<h2>Confidence</h2>",
        _img(_plot_scores(night), "distribution of score tonight and in validation"),
        f"<h2>Drift, last {cfg.nights} nights</h2>",
        _img(_plot_drift(window, history, cfg), _DRIFT_ALT),
        _trend_table(history, cfg, link_prefix="../"),
    ]
    path = data.report(date) / PAGE
    lake.write_bytes(path, _page(f"Night of {date}", body).encode())
    return path


def write_trend_report(data: lake.DataDir, start: str, end: str, cfg: ReportConfig) -> Path:
    """The trend alone over [start, end]: rows and drift per night, from the summaries."""
    window = lake.date_range(start, end)
    history = summaries(data, start, end)
    if not history:
        msg = f"{data.reports}: no night between {start} and {end} has a summary; hint: `pipeline run` them"
        raise PipelineError(msg)
    body = [
        f"<h1>Nights {_e(start)} to {_e(end)}</h1>",
        f"<p>{len(history)} of {len(window)} nights have a summary.</p>",
        _img(_plot_rows(window, history, None), "rows read, kept and quarantined per night"),
        _img(_plot_drift(window, history, cfg), _DRIFT_ALT),
        _trend_table(history, cfg, link_prefix="../"),
    ]
    path = data.reports / f"range={start}_{end}" / PAGE
    lake.write_bytes(path, _page(f"Nights {start} to {end}", body).encode())
    return path


# ---------------------------------------------------------------------------- html

_DRIFT_ALT = "PSI of the class mix and of the score distribution per night"
_NAMES = {"class_mix": "class mix", "score": "score distribution"}
_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 980px; color: #222; }
table { border-collapse: collapse; margin: 8px 0 16px; }
td, th { border-bottom: 1px solid #ddd; padding: 3px 10px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
tr.flagged td { color: #c44e52; font-weight: 600; }
.alert { background: #fbe3e4; color: #8a1f11; padding: 8px 12px; border-radius: 4px; }
.ok { background: #e6f4ea; color: #1e4620; padding: 8px 12px; border-radius: 4px; }
img { display: block; max-width: 100%; }
"""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _status(night: dict[str, Any], cfg: ReportConfig) -> list[str]:
    """The lines under the title: the night's warnings first, then its drift (not measured when a
    warning says there is nothing to measure)."""
    warned = drift.warnings(night)
    out = [
        f'<p class="alert" data-figure="warning" data-value="{_e(code)}">{_e(text)}</p>'
        for code, text in warned.items()
    ]
    drifted = [k for k, v in drift.flags(night, cfg).items() if v]
    if drifted:
        out.append(
            f'<p class="alert" data-figure="drift" data-value="{" ".join(drifted)}">Drift above the '
            f"thresholds: {', '.join(_NAMES[k] for k in drifted)}.</p>"
        )
    elif warned:
        out.append('<p class="alert" data-figure="drift" data-value="">No drift measured.</p>')
    else:
        out.append('<p class="ok" data-figure="drift" data-value="">No drift above the thresholds.</p>')
    return out


def _cell(key: str, value: Any, text: str) -> str:
    return f'<td data-figure="{_e(key)}" data-value="{_e(_raw(value))}">{_e(text)}</td>'


def _raw(value: Any) -> str:
    return "" if value is None else str(value)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _night_table(s: dict[str, Any], cfg: ReportConfig) -> str:
    rows = [
        ("rows read", "rows_read", s["rows_read"], f"{s['rows_read']:,}"),
        ("rows kept", "rows_kept", s["rows_kept"], f"{s['rows_kept']:,}"),
        ("rows quarantined", "rows_quarantined", s["rows_quarantined"], f"{s['rows_quarantined']:,}"),
        *[
            (f"... {reason}", f"quarantined:{reason}", n, f"{n:,}")
            for reason, n in s["quarantined_by_reason"].items()
        ],
        ("rows scored", "rows_scored", s["rows_scored"], f"{s['rows_scored']:,}"),
        (
            f"score below {s['confidence']:g}",
            "low_confidence_share",
            s["low_confidence_share"],
            _pct(s["low_confidence_share"]),
        ),
        (
            f"PSI class mix (threshold {cfg.psi_class_mix:g})",
            "psi_class_mix",
            s["drift"]["psi_class_mix"],
            _num(s["drift"]["psi_class_mix"]),
        ),
        (
            f"PSI score (threshold {cfg.psi_score:g})",
            "psi_score",
            s["drift"]["psi_score"],
            _num(s["drift"]["psi_score"]),
        ),
    ]
    cells = "\n".join(f"<tr><th>{_e(name)}</th>{_cell(key, v, text)}</tr>" for name, key, v, text in rows)
    return f"<table>\n{cells}\n</table>"


def _class_table(s: dict[str, Any]) -> str:
    """Each class (a label: data, escaped like every text here), its rows tonight and the shares."""
    now, ref = _shares(s["class_counts"]), _shares(s["reference"]["classes"])
    lines = ["<tr><th>class</th><th>rows tonight</th><th>share</th><th>in validation</th></tr>"]
    for i, label in enumerate(s["labels"]):
        n = s["class_counts"][i]
        share = [_pct(None if x is None else x[i]) for x in (now, ref)]
        lines.append(
            f"<tr><th>{_e(label)}</th>{_cell(f'class:{label}', n, f'{n:,}')}"
            f"<td>{share[0]}</td><td>{share[1]}</td></tr>"
        )
    return '<table class="classes">\n' + "\n".join(lines) + "\n</table>"


def _trend_table(history: list[dict[str, Any]], cfg: ReportConfig, *, link_prefix: str) -> str:
    head = (
        "<tr><th>night</th><th>read</th><th>kept</th><th>quarantined</th><th>low confidence</th>"
        "<th>PSI classes</th><th>PSI score</th><th>model</th><th>drift</th></tr>"
    )
    lines = [head]
    for s in reversed(history):
        f = [_NAMES[k] for k, v in drift.flags(s, cfg).items() if v]
        date, css = _e(s["date"]), " class=flagged" if f else ""
        lines.append(
            f'<tr{css}><td><a href="{link_prefix}date={date}/{PAGE}">{date}</a></td>'
            f"<td>{s['rows_read']:,}</td><td>{s['rows_kept']:,}</td><td>{s['rows_quarantined']:,}</td>"
            f"<td>{_pct(s['low_confidence_share'])}</td><td>{_num(s['drift']['psi_class_mix'])}</td>"
            f"<td>{_num(s['drift']['psi_score'])}</td><td>{_e(s['model_version'])}</td>"
            f"<td>{_e(', '.join(f) or '-')}</td></tr>"
        )
    return '<table class="trend">\n' + "\n".join(lines) + "\n</table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


# ---------------------------------------------------------------------------- pictures


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _night_axis(ax: Any, window: list[str], history: list[dict[str, Any]]) -> np.ndarray:
    """x of each summarised night: its slot among all the window's dates (a night without one: a gap)."""
    slot = {d: i for i, d in enumerate(window)}
    step = max(1, len(window) // 31)
    ticks = list(range(0, len(window), step))
    ax.set_xticks(ticks, [window[i][5:] for i in ticks], rotation=60, fontsize=7)
    ax.set_xlim(-0.6, len(window) - 0.4)
    return np.array([slot[s["date"]] for s in history], dtype=float)


@plain_text()
def _plot_rows(window: list[str], history: list[dict[str, Any]], current: str | None) -> bytes:
    fig, ax = plt.subplots(figsize=(11, 2.8))
    x = _night_axis(ax, window, history)
    kept = np.array([s["rows_kept"] for s in history], dtype=float)
    ax.bar(x, kept, color=_KEPT, label="kept")
    bottom = kept.copy()
    reasons = sorted({r for s in history for r in s["quarantined_by_reason"]})
    for i, reason in enumerate(reasons):
        n = np.array([s["quarantined_by_reason"].get(reason, 0) for s in history], dtype=float)
        ax.bar(x, n, bottom=bottom, color=plt.cm.Reds(0.4 + 0.5 * i / max(len(reasons), 1)), label=reason)
        bottom += n
    if current is not None and history and history[-1]["date"] == current:
        ax.bar(x[-1:], bottom[-1:], fill=False, edgecolor="black", linewidth=1.5)
    ax.set_ylabel("rows")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def _shares(counts: list[int] | None) -> np.ndarray | None:
    if counts is None or sum(counts) == 0:
        return None
    c = np.asarray(counts, dtype=float)
    return c / c.sum()


@plain_text()
def _plot_classes(s: dict[str, Any]) -> bytes:
    fig, ax = plt.subplots(figsize=(11, 2.8))
    x = np.arange(len(s["labels"]))
    now, ref = _shares(s["class_counts"]), _shares(s["reference"]["classes"])
    if ref is not None:
        ax.bar(x - 0.2, ref, width=0.4, color=_REF, label="model's validation predictions")
    if now is not None:
        ax.bar(x + 0.2, now, width=0.4, color=_NOW, label=f"night of {s['date']}")
    ax.set_xticks(x, s["labels"])
    ax.set_ylabel("share of rows")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


@plain_text()
def _plot_scores(s: dict[str, Any]) -> bytes:
    fig, ax = plt.subplots(figsize=(11, 2.8))
    edges = np.linspace(0, 1, drift.SCORE_BINS + 1)
    now, ref = _shares(s["score_hist"]), _shares(s["reference"]["score_hist"])
    if ref is not None:
        ax.stairs(ref, edges, color=_REF, linewidth=2, label="model's validation predictions")
    if now is not None:
        ax.stairs(now, edges, color=_NOW, fill=True, alpha=0.6, label=f"night of {s['date']}")
    ax.axvline(s["confidence"], color=_BAD, linestyle="--", label=f"confidence {s['confidence']:g}")
    ax.set_xlabel("score (probability of the predicted class)")
    ax.set_ylabel("share of rows")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


@plain_text()
def _plot_drift(window: list[str], history: list[dict[str, Any]], cfg: ReportConfig) -> bytes:
    fig, ax = plt.subplots(figsize=(11, 2.8))
    x = _night_axis(ax, window, history)
    for key, threshold, color in (
        ("psi_class_mix", cfg.psi_class_mix, _KEPT),
        ("psi_score", cfg.psi_score, _NOW),
    ):
        y = np.array([np.nan if s["drift"][key] is None else s["drift"][key] for s in history])
        name = "class mix" if key == "psi_class_mix" else "score"
        ax.plot(x, y, marker="o", color=color, label=f"PSI {name}")
        ax.axhline(threshold, color=color, linestyle=":", linewidth=1)
        over = y > threshold
        ax.plot(x[over], y[over], "o", color=_BAD, markersize=9, fillstyle="none")
    ax.set_ylabel("PSI")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)
