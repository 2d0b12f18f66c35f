"""``vmcore dashboard``: one self-contained static HTML page from the stored benchmark runs.

The page has, top to bottom:

* the latest run's table against native (the same columns as ``vmcore bench``), regressed
  benchmarks highlighted;
* every stored run: when, which machine, which commit, which size, how many regressions;
* one chart per benchmark (workload, mode, size) over the runs: median time with the min-max
  range and the native time, and guest MIPS; regressed runs are marked, and the
  numbers behind each chart are in a table under it.

The charts are plotly figures; plotly.js is inlined once, so the page works without a network.
A JSON summary of every run and benchmark is embedded as ``<script type="application/json"
id="vmcore-bench-data">`` for tools.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
import re
from pathlib import Path

from vmcore import bench
from vmcore.errors import ConfigError

DATA_ID = "vmcore-bench-data"

_CSS = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em 2em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.meta { color: #666; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 13px; }
th, td { padding: 3px 7px; border-bottom: 1px solid #e4e4e4; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; white-space: normal; vertical-align: bottom; } td.l, th.l { text-align: left; }
.scroll { overflow-x: auto; }
tr.regressed td { background: #ffd9d9; } td.regressed { color: #b00000; font-weight: bold; }
td.yes { color: #137333; } td.no { color: #b00000; } td.better { color: #137333; }
.badge { display: inline-block; padding: 1px 7px; border-radius: 8px; background: #b00000; color: white; }
.ok { background: #137333; }
section.series { margin: 1.2em 0 2em; } .chart { height: 460px; max-width: 1100px; }
details { margin-left: 1em; } summary { cursor: pointer; color: #555; }
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _slug(key: tuple) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(str(k) for k in key if k not in (None, ""))).strip("-")


def _series_title(row: bench.Row) -> str:
    if row.mode == "":
        return row.workload
    return f"{row.workload} · {row.mode} · {row.engine} · {row.size_label}" + (
        f" (size={row.size:,})" if row.size_label != str(row.size) and row.size is not None else "")


def _rows_table(rows: list[bench.Row], bar: float, fail_above: float) -> str:
    head = ("<tr><th class=l>workload</th><th class=l>mode</th><th class=l>engine</th><th class=l>size</th>"
            "<th>median</th><th>min</th>"
            "<th>guest instructions</th><th>guest MIPS</th><th>native</th><th>slowdown vs native</th>"
            f"<th>bt / bare</th><th>jit / interp</th><th>bar &le; {_e(bar)}</th><th>exits</th><th>vs previous</th><th class=l>previous run</th></tr>")
    body = []
    for r in rows:
        bar_cell = bench.fmt_bar(r.meets_bar)
        change_cls = "regressed" if r.regressed else ("better" if r.change is not None and r.change < -fail_above else "")
        body.append(
            f'<tr class="{"regressed" if r.regressed else ""}" data-bench="{_e(r.name)}">'
            f"<td class=l>{_e(r.workload)}</td><td class=l>{_e(r.mode)}</td><td class=l>{_e(r.engine)}</td>"
            f"<td class=l>{_e(r.size_label)}</td>"
            f"<td>{_e(bench.fmt_seconds(r.median))}</td><td>{_e(bench.fmt_seconds(r.min))}</td>"
            f"<td>{_e(bench.fmt_count(r.guest_instructions))}</td><td>{_e(bench.fmt_mips(r.guest_mips))}</td>"
            f"<td>{_e(bench.fmt_seconds(r.native_seconds))}</td><td>{_e(bench.fmt_ratio(r.slowdown))}</td>"
            f"<td>{_e(bench.fmt_ratio(r.bt_over_bare))}</td><td>{_e(bench.fmt_ratio(r.jit_over_interp))}</td>"
            f"<td class={_e(bar_cell)}>{_e(bar_cell)}</td>"
            f"<td>{_e(bench.fmt_count(r.exits))}</td>"
            f'<td class="{change_cls}">{_e(bench.fmt_change(r.change))}{" regressed" if r.regressed else ""}</td>'
            f"<td class=l>{_e(r.previous.label() if r.previous else '-')}</td></tr>")
    return f"<div class=scroll><table>{head}{''.join(body)}</table></div>"


def _runs_table(runs: list[bench.Run], regressions: dict[int, int], with_machine: bool) -> str:
    head = ("<tr><th class=l>run</th><th class=l>date (UTC)</th><th class=l>commit</th><th class=l>branch</th>"
            "<th class=l>machine</th><th class=l>storage folder</th><th class=l>size</th><th>benchmarks</th>"
            "<th>regressions</th></tr>")
    body = []
    for run in reversed(runs):
        n = regressions[id(run)]
        badge = f'<span class="badge">{n}</span>' if n else "0"
        body.append(
            f'<tr id="run-{_e(run.machine_id)}-{_e(run.number)}" class="{"regressed" if n else ""}">'
            f"<td class=l>#{_e(run.number)}</td><td class=l>{_e(run.datetime[:19].replace('T', ' '))}</td>"
            f"<td class=l><code>{_e(run.commit_short)}</code></td><td class=l>{_e(run.commit.get('branch', '?'))}</td>"
            f"<td class=l>{_e(run.machine)}</td><td class=l>{_e(run.machine_id)}</td>"
            f"<td class=l>{_e(run.size_label)}</td><td>{len(run.benchmarks)}</td><td>{badge}</td></tr>")
    return f"<div class=scroll><table>{head}{''.join(body)}</table></div>"


def _series_figure(title: str, points: list[tuple[bench.Run, bench.Row]], with_machine: bool, div_id: str) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    x = [run.label(with_machine) for run, _ in points]
    hover = [f"run #{run.number}<br>{run.datetime[:19]}<br>commit {run.commit_short}<br>{run.machine}"
             for run, _ in points]
    med = [r.median for _, r in points]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=("time per run: vmcore median (bars: min-max over the rounds) and native",
                                        "guest MIPS"))
    fig.add_trace(go.Scatter(
        x=x, y=med, mode="lines+markers", name="vmcore median", line={"color": "#1f5fbf"},
        error_y={"type": "data", "symmetric": False, "array": [r.max - r.median for _, r in points],
                 "arrayminus": [r.median - r.min for _, r in points], "thickness": 1},
        text=hover, hovertemplate="%{text}<br>median %{y:.4g} s<extra></extra>"), row=1, col=1)
    native = [r.native_seconds for _, r in points]
    if any(v is not None for v in native):
        fig.add_trace(go.Scatter(x=x, y=native, mode="lines+markers", name="native",
                                 line={"color": "#888", "dash": "dash"},
                                 hovertemplate="native %{y:.4g} s<extra></extra>"), row=1, col=1)
    bad = [(xi, r.median) for xi, (_, r) in zip(x, points) if r.regressed]
    if bad:
        fig.add_trace(go.Scatter(x=[b[0] for b in bad], y=[b[1] for b in bad], mode="markers", name="regressed",
                                 marker={"color": "#d00000", "size": 15, "symbol": "x"},
                                 hovertemplate="regressed<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=[r.guest_mips for _, r in points], mode="lines+markers", name="guest MIPS",
                             line={"color": "#2a9d55"}, text=hover,
                             hovertemplate="%{text}<br>%{y:.1f} MIPS<extra></extra>"), row=2, col=1)
    fig.update_yaxes(rangemode="tozero", tickformat="~s", ticksuffix="s", row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=2, col=1)
    fig.update_xaxes(type="category")
    fig.update_layout(title={"text": title, "x": 0}, template="plotly_white", height=460,
                      margin={"l": 60, "r": 20, "t": 70, "b": 60}, legend={"orientation": "h", "y": -0.15})
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def _series_numbers(points: list[tuple[bench.Run, bench.Row]], with_machine: bool) -> str:
    head = ("<tr><th class=l>run</th><th class=l>date (UTC)</th><th class=l>commit</th><th>median</th><th>min</th>"
            "<th>max</th><th>rounds</th><th>guest MIPS</th><th>native</th><th>slowdown</th><th>vs previous</th></tr>")
    body = []
    for run, r in reversed(points):
        body.append(
            f'<tr class="{"regressed" if r.regressed else ""}" data-run="{_e(run.label(with_machine))}">'
            f"<td class=l>{_e(run.label(with_machine))}</td><td class=l>{_e(run.datetime[:19].replace('T', ' '))}</td>"
            f"<td class=l><code>{_e(run.commit_short)}</code></td>"
            f"<td>{_e(bench.fmt_seconds(r.median))}</td><td>{_e(bench.fmt_seconds(r.min))}</td>"
            f"<td>{_e(bench.fmt_seconds(r.max))}</td><td>{r.rounds}</td><td>{_e(bench.fmt_mips(r.guest_mips))}</td>"
            f"<td>{_e(bench.fmt_seconds(r.native_seconds))}</td><td>{_e(bench.fmt_ratio(r.slowdown))}</td>"
            f'<td class="{"regressed" if r.regressed else ""}">{_e(bench.fmt_change(r.change))}</td></tr>')
    return f"<details><summary>numbers</summary><table>{head}{''.join(body)}</table></details>"


def build(storage: str | os.PathLike, bar: float = bench.DEFAULT_BAR,
          fail_above: float = bench.DEFAULT_FAIL_ABOVE) -> str:
    """The dashboard page for the runs stored under ``storage``, as one HTML string."""
    from plotly.offline import get_plotlyjs

    storage = Path(storage)
    runs = bench.load_runs(storage)
    if not runs:
        raise ConfigError(f"no stored benchmark runs under {storage}: run `vmcore bench` first")
    with_machine = len({r.machine_id for r in runs}) > 1
    rows = {id(run): bench.rows_of(run, runs, bar, fail_above) for run in runs}
    regressions = {k: sum(r.regressed for r in v) for k, v in rows.items()}

    series: dict[tuple, list[tuple[bench.Run, bench.Row]]] = {}
    for run in runs:
        for row in rows[id(run)]:
            series.setdefault(row.key, []).append((run, row))

    latest = runs[-1]
    n_reg = regressions[id(latest)]
    badge = f'<span class="badge">{n_reg} regressed</span>' if n_reg else '<span class="badge ok">no regressions</span>'
    parts = [
        f"<h1>vmcore benchmarks</h1><p class=meta>{len(runs)} stored runs from <code>{_e(storage.resolve())}</code>, "
        f"{len(series)} benchmarks; generated {_e(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'))}. "
        f"Bar: slowdown vs native &le; {_e(bar)} (VMware's prior-generation bar). Regressed: median more than "
        f"{_e(fail_above)}% above the previous run of the same benchmark on the same machine id.</p>",
        f"<h2 id=latest>Latest run: #{_e(latest.number)} {badge}</h2>",
        f"<p class=meta>{_e(latest.datetime[:19].replace('T', ' '))} UTC · commit <code>{_e(latest.commit_short)}</code> "
        f"({_e(latest.commit.get('branch', '?'))}) · {_e(latest.machine)} · {_e(latest.machine_id)} · "
        f"<code>{_e(latest.path.name)}</code></p>",
        _rows_table(rows[id(latest)], bar, fail_above),
        "<h2 id=runs>Runs</h2>",
        _runs_table(runs, regressions, with_machine),
        "<h2 id=charts>Over the runs</h2>",
    ]
    for i, (key, points) in enumerate(sorted(series.items(), key=lambda kv: tuple(map(str, kv[0])))):
        title = _series_title(points[-1][1])
        slug = _slug(key) or f"series-{i}"
        parts.append(f'<section class="series" id="series-{_e(slug)}" data-bench="{_e(points[-1][1].name)}">'
                     f'<div class="chart">{_series_figure(title, points, with_machine, f"chart-{i}")}</div>'
                     f"{_series_numbers(points, with_machine)}</section>")

    data = {
        "storage": str(storage.resolve()), "bar": bar, "fail_above": fail_above,
        "runs": [{
            "label": run.label(with_machine), "machine_id": run.machine_id, "number": run.number,
            "file": run.path.name, "datetime": run.datetime, "commit": run.commit, "machine": run.machine,
            "size": run.size_label,
            "benchmarks": [{k: getattr(r, k) for k in (
                "name", "workload", "mode", "engine", "size", "median", "min", "max", "guest_instructions",
                "guest_mips", "native_seconds", "slowdown", "bt_over_bare", "jit_over_interp", "meets_bar",
                "change", "regressed")}
                for r in rows[id(run)]],
        } for run in runs],
    }
    data_json = json.dumps(data, indent=1).replace("</", "<\\/")
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<title>vmcore benchmarks</title><style>{_CSS}</style>"
            f'<script type="text/javascript">{get_plotlyjs()}</script>'
            f'<script type="application/json" id="{DATA_ID}">{data_json}</script>'
            f"</head><body>{''.join(parts)}</body></html>\n")


def write(storage: str | os.PathLike, out: str | os.PathLike, bar: float = bench.DEFAULT_BAR,
          fail_above: float = bench.DEFAULT_FAIL_ABOVE) -> Path:
    """Writes the dashboard for ``storage`` to ``out`` (through a temporary file) and returns its path."""
    out = Path(out)
    page = build(storage, bar, fail_above)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
