"""`vmcore bench` and `vmcore dashboard` on real runs of the bench/ suite at the tiny size.

Three runs are stored by `vmcore bench --size tiny` (a few seconds in all); the dashboard built
from them must show every run and every benchmark with its numbers, and must render in a real
headless browser (Debian's chromium; .ci/run installs it) with every chart drawn. Set
VMCORE_SCREENSHOT_DIR to keep the screenshot.
"""

import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vmcore import bench, benchkeys, workloads
from vmcore.dashboard import DATA_ID

pytest.importorskip("pytest_benchmark")

RUNS = 3
# every benchmarked workload: bench/test_workloads.py's, then bench/test_kernel.py's (in bare;
# bench/test_monitor.py benchmarks each of them in bt too)
BENCHMARKED = [*workloads.WORKLOADS, *workloads.KERNEL_WORKLOADS, *(f"nano-{op}" for op in workloads.NANOBENCHMARKS)]
BT_OVER_BARE_COLUMN = 8         # of `vmcore bench`'s table, counted from 0
JIT_OVER_INTERP_COLUMN = 9


def vmcore(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(bench.REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "vmcore", *map(str, args)], cwd=bench.REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A storage with RUNS runs of the whole suite at the tiny size, and what `vmcore bench` printed."""
    storage = tmp_path_factory.mktemp("benchmarks")
    outputs = []
    for _ in range(RUNS):
        proc = vmcore("bench", "--size", "tiny", "--storage", storage)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outputs.append(proc.stdout)
    return storage, outputs


@pytest.fixture(scope="module")
def page(stored, tmp_path_factory):
    storage, _ = stored
    out = tmp_path_factory.mktemp("dashboard") / "dash.html"
    proc = vmcore("dashboard", "--storage", storage, "-o", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _runs_on_disk(storage):
    files = sorted(storage.glob("*/[0-9][0-9][0-9][0-9]_*.json"))
    return [(f, json.loads(f.read_text())) for f in files]


def _section(text, element_id):
    """The HTML of the element with ``element_id`` up to the next section of the same kind."""
    start = text.index(f'id="{element_id}"')
    end = text.find("<section", start)
    return text[start:end if end >= 0 else len(text)]


def test_bench_stores_each_run_with_the_documented_keys(stored):
    storage, _ = stored
    runs = _runs_on_disk(storage)
    assert len(runs) == RUNS
    assert [f.name[:4] for f, _ in runs] == ["0001", "0002", "0003"]
    for _, data in runs:
        assert {b["extra_info"]["workload"] for b in data["benchmarks"]} == set(BENCHMARKED)
        for b in data["benchmarks"]:
            assert benchkeys.check(b["extra_info"]) == [], b["fullname"]


def test_bench_prints_the_table(stored):
    storage, outputs = stored
    first, last = outputs[0], outputs[-1]
    for name in BENCHMARKED:
        assert re.search(rf"│ {name} +│ bare +│ interp +│ tiny +│", first), name
        assert re.search(rf"│ {name} +│ bare +│ jit +│ tiny +│", first), name
    head = first[:first.index("┡")]
    for column in ("workload", "mode", "engine", "size", "median", "guest MIPS", "native", "slowdown", "bt/bare",
                   "jit/interp", "bar ≤1.19", "vs prev"):
        assert column in head, column
    rows = [line for line in first.splitlines() if line.startswith("│")]
    benchmarks = bench.load_runs(storage)[0].benchmarks
    assert len(rows) == len(benchmarks)
    in_bt = {b["extra_info"]["workload"] for b in benchmarks if b["extra_info"]["mode"] == "bt"}
    for line in rows:       # bt/bare: a ratio where the workload ran in both modes (bench/test_monitor.py), else n/a
        cells = [c.strip() for c in line.split("│")[1:-1]]
        assert re.fullmatch(r"\d+\.\d\dx" if cells[0] in in_bt else "n/a", cells[BT_OVER_BARE_COLUMN]), line
        # jit/interp: every benchmark runs on both engines (bench/test_jit.py)
        assert re.fullmatch(r"\d+\.\d\dx", cells[JIT_OVER_INTERP_COLUMN]), line
    # the bar: yes or no, but n/a for a nanobenchmark (no native counterpart)
    assert all(re.search(r"│ +(n/a) +│" if line.startswith("│ nano-") else r"│ +(yes|no) +│", line) for line in rows)
    assert all(line.rstrip().endswith("- │") for line in rows)                 # first run: nothing before it
    assert all(re.search(r"[+-]\d+\.\d% (REGRESSED )?│$", line.rstrip()) for line in last.splitlines()
               if line.startswith("│"))                                          # later runs: the change
    assert "stored: " in last and "0003_" in last


def test_dashboard_shows_every_run_and_benchmark_with_its_numbers(stored, page):
    storage, _ = stored
    text = page.read_text()
    data = json.loads(re.search(rf'<script type="application/json" id="{DATA_ID}">(.*?)</script>', text, re.S)[1])
    runs = bench.load_runs(storage)
    assert [r["number"] for r in data["runs"]] == ["0001", "0002", "0003"]
    for run in runs:
        row = _section(text, f"run-{run.machine_id}-{run.number}")
        row = row[:row.index("</tr>")]
        assert f"#{run.number}" in row and html.escape(run.commit_short) in row and run.size_label in row
        assert run.datetime[:19].replace("T", " ") in row
        assert html.escape(run.machine) in row
        for b in run.benchmarks:
            key = bench.series_key(b)
            ei = b["extra_info"]
            section = _section(text, "series-" + "-".join(str(k) for k in key))
            numbers = re.search(rf'<tr class="[a-z]*" data-run="{re.escape(html.escape(run.label()))}">(.*?)</tr>',
                                section, re.S)
            assert numbers, (run.number, key)
            cells = re.findall(r"<td[^>]*>(.*?)</td>", numbers[1])
            assert bench.fmt_seconds(b["stats"]["median"]) in cells
            assert bench.fmt_seconds(b["stats"]["min"]) in cells
            assert bench.fmt_seconds(b["stats"]["max"]) in cells
            assert bench.fmt_mips(ei["guest_mips"]) in cells
            assert bench.fmt_seconds(ei.get("native_seconds")) in cells       # n/a for a nanobenchmark
            assert bench.fmt_ratio(ei.get("slowdown_vs_native")) in cells
            # the chart itself: a plotly figure whose traces hold the median and the MIPS of this run
            assert f'"{run.label()}"' in section
            assert repr(b["stats"]["median"]) in section or json.dumps(b["stats"]["median"]) in section
            assert json.dumps(ei["guest_mips"]) in section
    latest = runs[-1]
    table = text[text.index("id=latest"):text.index("id=runs")]
    for b in latest.benchmarks:
        assert f'data-bench="{html.escape(b["fullname"])}"' in table
        assert bench.fmt_count(b["extra_info"]["guest_instructions"]) in table
        assert bench.fmt_mips(b["extra_info"]["guest_mips"]) in table


def test_dashboard_is_self_contained(page):
    text = page.read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=[\"']?(https?:)?//", text, re.I)
    assert "Plotly.newPlot" in text and len(text) > 1_000_000        # plotly.js is inlined


def test_dashboard_highlights_regressions(stored, tmp_path):
    """A stored run 20x faster than the others makes the run after it a regression, marked as such."""
    storage, _ = stored
    copy = tmp_path / "storage"
    shutil.copytree(storage, copy)
    _fake_run(copy, scale=1 / 20, number="0004")
    shutil.copy(sorted(copy.glob("*/0003_*.json"))[0], next(copy.glob("*")) / "0005_again.json")
    _bump_datetime(next(copy.glob("*/0005_*.json")))
    out = tmp_path / "dash.html"
    assert vmcore("dashboard", "--storage", copy, "-o", out).returncode == 0
    text = out.read_text()
    assert re.search(r'<span class="badge">\d+ regressed</span>', text)
    row = _section(text, f"run-{next(copy.glob('*')).name}-0005")
    assert 'class="regressed"' in row[:200]
    assert '"regressed"' in text and "#d00000" in text                    # the red marks in the charts


def test_compare_fails_on_a_regression_and_passes_without(stored, tmp_path):
    storage, _ = stored
    copy = tmp_path / "storage"
    shutil.copytree(storage, copy)
    _fake_run(copy, scale=1 / 20, number="0004")            # the latest stored run looks 20x faster
    proc = vmcore("bench", "--size", "tiny", "--storage", copy, "--compare", "-k", "sieve", "--fail-above", "50")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "comparing against run 0004" in proc.stdout
    assert "REGRESSED" in proc.stdout and "performance regressed" in proc.stdout
    assert "Performance has regressed" in proc.stderr       # pytest-benchmark's own compare-fail
    _fake_run(copy, scale=20, number="0006")                # now a much slower baseline, chosen by number
    proc = vmcore("bench", "--size", "tiny", "--storage", copy, "--compare", "0006", "-k", "sieve")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "comparing against run 0006" in proc.stdout and "REGRESSED" not in proc.stdout


def test_compare_without_a_stored_run_says_so(tmp_path):
    proc = vmcore("bench", "--size", "tiny", "--storage", tmp_path, "--compare", "0042", "-k", "sieve")
    assert proc.returncode == 2 and "no stored run '0042'" in proc.stderr


def test_dashboard_without_runs_is_an_error(tmp_path):
    proc = vmcore("dashboard", "--storage", tmp_path, "-o", tmp_path / "x.html")
    assert proc.returncode == 2 and "run `vmcore bench` first" in proc.stderr


def _with_fake_bt(run, workload, median_scale, per_op_scale=None):
    """Adds to ``run`` a copy of its bare benchmark of ``workload`` as a bt one, its median (and
    host_ns_per_op) scaled."""
    bare = next(b for b in run.benchmarks if b["extra_info"]["workload"] == workload)
    bt = json.loads(json.dumps(bare))
    bt["fullname"] += "-bt"
    bt["extra_info"]["mode"] = "bt"
    bt["stats"]["median"] = bare["stats"]["median"] * median_scale
    if per_op_scale is not None:
        bt["extra_info"]["host_ns_per_op"] = bare["extra_info"]["host_ns_per_op"] * per_op_scale
    run.data["benchmarks"].append(bt)
    return bare


def test_bt_over_bare_is_computed_when_both_modes_are_in_a_run(stored, tmp_path):
    storage, _ = stored
    run = bench.load_runs(storage)[-1]
    run.data["benchmarks"] = [b for b in run.benchmarks
                              if b["extra_info"]["mode"] == "bare" and b["extra_info"]["engine"] == "interp"]
    bare = _with_fake_bt(run, "sieve", 1.5)
    _with_fake_bt(run, "nano-syscall", 1.5, per_op_scale=3.0)     # a nanobenchmark: its loop per operation
    rows = {(r.workload, r.mode): r for r in bench.rows_of(run, [])}
    assert rows["sieve", "bt"].bt_over_bare == pytest.approx(1.5)
    assert rows["sieve", "bare"].bt_over_bare == pytest.approx(1.5)
    assert rows["nano-syscall", "bt"].bt_over_bare == pytest.approx(3.0)
    assert rows["crc32", "bare"].bt_over_bare is None
    assert rows["sieve", "bare"].meets_bar == (bare["extra_info"]["slowdown_vs_native"] <= bench.DEFAULT_BAR)
    # `vmcore bench`'s table and the dashboard's show it
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    console.print(bench.table(run, bench.rows_of(run, [])))
    printed = {tuple(c.strip() for c in line.split("│")[1:3]): line.split("│")[BT_OVER_BARE_COLUMN + 1].strip()
               for line in console.file.getvalue().splitlines() if line.startswith("│")}
    assert printed["sieve", "bt"] == printed["sieve", "bare"] == "1.50x"
    assert printed["nano-syscall", "bt"] == "3.00x" and printed["crc32", "bare"] == "n/a"
    copy = tmp_path / "storage" / run.machine_id
    copy.mkdir(parents=True)
    (copy / run.path.name).write_text(json.dumps(run.data))
    from vmcore import dashboard

    text = dashboard.build(copy.parent)
    data = json.loads(re.search(rf'<script type="application/json" id="{DATA_ID}">(.*?)</script>', text, re.S)[1])
    ratios = {(b["workload"], b["mode"]): b["bt_over_bare"] for b in data["runs"][-1]["benchmarks"]}
    assert ratios["sieve", "bt"] == pytest.approx(1.5) and ratios["crc32", "bare"] is None
    latest = text[text.index("id=latest"):text.index("id=runs")]
    assert re.search(r"<td class=l>sieve</td><td class=l>bt</td>(?:(?!</tr>).)*<td>1\.50x</td>", latest)


def test_jit_benchmarks_stand_next_to_interp_ones(stored):
    """Every benchmark runs on the JIT too (bench/test_jit.py), and its row has the ratio."""
    storage, _ = stored
    for run in bench.load_runs(storage):
        engines = {}
        for b in run.benchmarks:
            engines.setdefault((b["extra_info"]["workload"], b["extra_info"]["mode"]), set()).add(
                b["extra_info"]["engine"])
        assert engines == {(name, mode): {"interp", "jit"} for name in BENCHMARKED for mode in ("bare", "bt")}
        rows = bench.rows_of(run, [])
        for row in rows:
            assert row.jit_over_interp is not None and row.jit_over_interp > 0, row.name
        # one series per engine: the interpreter's keeps the key it had before engines existed
        keys = [row.key for row in rows]
        assert len(set(keys)) == len(keys)
        for row in rows:
            assert row.key == ((row.workload, row.mode, row.size) if row.engine == "interp"
                               else (row.workload, row.mode, row.size, "jit")), row.name


def test_bt_benchmarks_stand_next_to_bare_ones(stored):
    """Every benchmark runs in bt too (bench/test_monitor.py), and its row has the ratio."""
    storage, _ = stored
    for run in bench.load_runs(storage):
        modes = {}
        for b in run.benchmarks:
            modes.setdefault(b["extra_info"]["workload"], set()).add(b["extra_info"]["mode"])
        assert modes == {name: {"bare", "bt"} for name in BENCHMARKED}
        for row in bench.rows_of(run, []):
            assert row.bt_over_bare is not None and row.bt_over_bare > 0, row.name


def test_a_benchmark_without_the_keys_is_still_shown(stored, tmp_path):
    """A benchmark someone adds without vmcore's extra_info gets its chart and row, named by its test."""
    from vmcore import dashboard

    storage, _ = stored
    copy = tmp_path / "storage"
    shutil.copytree(storage, copy)
    path = sorted(copy.glob("*/0003_*.json"))[0]
    data = json.loads(path.read_text())
    plain = json.loads(json.dumps(data["benchmarks"][0]))
    plain.update(name="test_other", fullname="bench/test_other.py::test_other", extra_info={})
    data["benchmarks"].append(plain)
    path.write_text(json.dumps(data))
    text = dashboard.build(copy)
    assert 'id="series-bench-test_other.py-test_other"' in text
    assert 'data-bench="bench/test_other.py::test_other"' in text
    assert bench.fmt_seconds(plain["stats"]["median"]) in text


def _fake_run(storage, scale, number):
    """A copy of the latest stored run with every time multiplied by ``scale``, stored as run ``number``."""
    src = bench.load_runs(storage)[-1]
    data = json.loads(json.dumps(src.data))
    for b in data["benchmarks"]:
        st = b["stats"]
        for k in ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3", "ld15iqr", "hd15iqr", "total"):
            st[k] *= scale
        st["ops"] /= scale
        b["extra_info"]["guest_mips"] /= scale
    path = src.path.parent / f"{number}_fake.json"
    path.write_text(json.dumps(data))
    _bump_datetime(path)


def _bump_datetime(path: Path):
    import datetime

    data = json.loads(path.read_text())
    data["datetime"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    path.write_text(json.dumps(data))


# ---- the page in a real browser ----------------------------------------------------------------

def _chromium():
    for name in (os.environ.get("CHROME_BIN"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if name and (path := shutil.which(name)):
            return path
    return None


def test_dashboard_renders_in_headless_chromium(stored, page, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary found (apt-get install chromium; .ci/run installs it)")
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
              f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    n_series = len(re.findall(r'<section class="series"', page.read_text()))
    assert n_series == len({bench.series_key(b) for run in bench.load_runs(stored[0]) for b in run.benchmarks})
    assert n_series >= len(BENCHMARKED)
    # plotly drew every figure: each chart div gets its SVG, with one trace group per trace
    assert dom.stdout.count('class="main-svg"') >= n_series
    assert len(re.findall(r'class="[^"]*\bjs-plotly-plot\b', dom.stdout)) == n_series

    shot = tmp_path / "dashboard.png"
    proc = subprocess.run([*common, "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000          # a page, not a blank image
    if keep := os.environ.get("VMCORE_SCREENSHOT_DIR"):
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "dashboard.png")
        shutil.copy(page, Path(keep) / "dashboard.html")
