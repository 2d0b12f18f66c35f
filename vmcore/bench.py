"""``vmcore bench``: run the ``bench/`` suites, store the run, print the table, gate on regressions.

The suites are pytest-benchmark tests (``bench/``). ``vmcore bench`` runs them in this process
through ``pytest.main`` with ``--benchmark-autosave`` into the project's storage (default
``.benchmarks/`` at the repository root: pytest-benchmark's own layout,
``<storage>/<machine id>/<NNNN>_<commit>_<date>.json``), shows a rich progress bar while they
run, and prints one table for the run: workload, mode, size, median time, guest MIPS, native
time, slowdown against native, ``bt``/``bare`` (for a workload and size benchmarked in both modes:
the ratio of the medians, of ``host_ns_per_op`` for a nanobenchmark), whether VMware's bar holds
(slowdown against native at most ``--bar``, default 1.19) and the change against the previous
stored run.

With ``--compare`` the run is checked against a stored one (by default the latest run on this
machine id at the same workload size) by pytest-benchmark's own ``--benchmark-compare-fail
median:<N>%``; a regression past ``--fail-above`` percent fails the command (status 1).

The stored runs are read back here (``load_runs``) and turned into table rows (``rows_of``);
``vmcore.dashboard`` draws the same rows over all the runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from vmcore.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "bench"
"""The pytest-benchmark suites; found next to the package in a source checkout (``pip install -e .``)."""
DEFAULT_STORAGE = REPO_ROOT / ".benchmarks"
"""pytest-benchmark's storage for the project (git-ignored)."""

DEFAULT_BAR = 1.19
"""VMware's bar: a guest no slower than native on the previous CPU generation (1.13-1.19)."""
DEFAULT_FAIL_ABOVE = 10
"""A benchmark whose median grows by more than this many percent has regressed."""
SIZES = ("tiny", "small", "bench")
QUICK_SIZE = "small"


# ---- stored runs ---------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """One stored pytest-benchmark run (one JSON file)."""

    path: Path
    machine_id: str
    """pytest-benchmark's machine id: the storage folder (system-python-version-bits)."""
    number: str
    """The run's number in its folder, ``0001``, ``0002``, ..."""
    data: dict

    @property
    def benchmarks(self) -> list[dict]:
        return self.data.get("benchmarks", [])

    @property
    def datetime(self) -> str:
        return self.data.get("datetime", "")

    @property
    def commit(self) -> dict:
        return self.data.get("commit_info") or {}

    @property
    def commit_short(self) -> str:
        c = self.commit
        cid = str(c.get("id") or "unknown")
        short = cid[:10] if len(cid) == 40 else cid
        return short + ("+dirty" if c.get("dirty") else "")

    @property
    def machine(self) -> str:
        """Host, CPU and Python of the run, as one line."""
        mi = self.data.get("machine_info") or {}
        cpu = mi.get("cpu") or {}
        parts = [mi.get("node") or "?", cpu.get("brand_raw") or mi.get("processor") or mi.get("machine") or "?",
                 f"{cpu['count']} cpus" if cpu.get("count") else None,
                 f"{mi.get('python_implementation', 'Python')} {mi.get('python_version', '?')}"]
        return " · ".join(p for p in parts if p)

    @property
    def size_label(self) -> str:
        """The workload size of the run's benchmarks: tiny, small, bench, a number or mixed."""
        labels = {size_label(b.get("extra_info", {})) for b in self.benchmarks}
        if not labels:
            return "-"
        return labels.pop() if len(labels) == 1 else "mixed"

    def label(self, with_machine: bool = False) -> str:
        text = f"#{self.number} {self.commit_short}"
        return f"{self.machine_id}/{text}" if with_machine else text


def size_label(extra_info: dict) -> str:
    """``tiny``, ``small`` or ``bench`` when ``size`` is that calibrated size of the workload, else the number."""
    from vmcore import workloads

    sizes = workloads.bench_sizes(str(extra_info.get("workload")))
    size = extra_info.get("size")
    if size is None:
        return "-"
    if sizes is not None:
        for label, value in sizes.items():
            if value == size:
                return label
    return str(size)


def load_runs(storage: str | os.PathLike) -> list[Run]:
    """Every run stored under ``storage`` (all machine ids), oldest first; unreadable files are skipped."""
    storage = Path(storage)
    runs = []
    for path in storage.glob("*/[0-9][0-9][0-9][0-9]_*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            print(f"vmcore: skipping {path}: {e}", file=sys.stderr)
            continue
        if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
            print(f"vmcore: skipping {path}: not a pytest-benchmark run", file=sys.stderr)
            continue
        runs.append(Run(path, path.parent.name, path.name.split("_", 1)[0], data))
    runs.sort(key=lambda r: (r.datetime, r.machine_id, r.number))
    return runs


# ---- rows ----------------------------------------------------------------------------------

def engine_of(bench: dict) -> str:
    """The engine a benchmark ran on: ``interp`` for runs stored before the key existed."""
    return (bench.get("extra_info") or {}).get("engine", "interp")


def series_key(bench: dict) -> tuple:
    """What makes two benchmarks of different runs the same series: workload, mode, size (or the name),
    and the engine when it is not the interpreter (so the interpreter's series go on from older runs)."""
    ei = bench.get("extra_info") or {}
    if "workload" in ei:
        key = (ei["workload"], ei.get("mode", "?"), ei.get("size"))
        return key if engine_of(bench) == "interp" else key + (engine_of(bench),)
    return (bench.get("fullname") or bench.get("name"), "", None)


@dataclasses.dataclass
class Row:
    """One benchmark of a run, with what is computed from it and from the run before."""

    key: tuple
    name: str
    workload: str
    mode: str
    engine: str
    size: int | None
    size_label: str
    median: float
    min: float
    max: float
    rounds: int
    guest_instructions: int | None
    guest_mips: float | None
    native_seconds: float | None
    slowdown: float | None
    exits: int | None
    bt_over_bare: float | None
    """``bt`` over ``bare`` for this workload and size in the same run: of the medians, or for a
    nanobenchmark (``op`` in extra_info) of ``host_ns_per_op``, its timed loop alone."""
    jit_over_interp: float | None
    """``jit`` over ``interp`` for this workload, mode and size in the same run (as bt_over_bare)."""
    meets_bar: bool | None
    """slowdown vs native <= the bar; None without a native time."""
    previous: Run | None
    previous_median: float | None
    change: float | None
    """Percent change of the median against ``previous`` (positive: slower)."""
    regressed: bool


def _previous(run: Run, key: tuple, runs: list[Run]) -> tuple[Run, dict] | None:
    """The latest run stored before ``run`` on the same machine id that has the benchmark ``key``."""
    best = None
    for other in runs:
        if other is run or other.machine_id != run.machine_id:
            continue
        if (other.datetime, other.number) >= (run.datetime, run.number):
            continue
        for b in other.benchmarks:
            if series_key(b) == key:
                if best is None or (other.datetime, other.number) > (best[0].datetime, best[0].number):
                    best = (other, b)
                break
    return best


def _time_of(bench: dict) -> float:
    """The time bt/bare compares: a nanobenchmark's loop per operation, else the median."""
    ei = bench.get("extra_info") or {}
    if "op" in ei and ei.get("host_ns_per_op"):
        return ei["host_ns_per_op"]
    return bench["stats"]["median"]


def rows_of(run: Run, runs: Iterable[Run] = (), bar: float = DEFAULT_BAR,
            fail_above: float = DEFAULT_FAIL_ABOVE, against: Run | None = None) -> list[Row]:
    """The table rows of ``run``; changes are against the run before it in ``runs`` with the same
    benchmark, or against the run ``against`` when it is given."""
    runs = list(runs)
    times = {}          # what bt/bare and jit/interp compare, by (workload, size, mode, engine)
    for b in run.benchmarks:
        ei = b.get("extra_info") or {}
        times[(ei.get("workload"), ei.get("size"), ei.get("mode"), engine_of(b))] = _time_of(b)
    rows = []
    for b in run.benchmarks:
        ei = b.get("extra_info") or {}
        st = b["stats"]
        key = series_key(b)
        workload = ei.get("workload", b.get("name", "?"))
        engine = engine_of(b)
        bt = times.get((ei.get("workload"), ei.get("size"), "bt", engine))
        bare = times.get((ei.get("workload"), ei.get("size"), "bare", engine))
        ratio = bt / bare if bt and bare and ei.get("mode") in ("bt", "bare") else None
        jit = times.get((ei.get("workload"), ei.get("size"), ei.get("mode"), "jit"))
        interp = times.get((ei.get("workload"), ei.get("size"), ei.get("mode"), "interp"))
        jit_ratio = jit / interp if jit and interp and "workload" in ei else None
        slowdown = ei.get("slowdown_vs_native")
        if against is not None:
            prev = next(((against, o) for o in against.benchmarks if series_key(o) == key), None)
        else:
            prev = _previous(run, key, runs)
        change = prev_median = None
        if prev is not None:
            prev_median = prev[1]["stats"]["median"]
            if prev_median:
                change = st["median"] / prev_median * 100 - 100
        rows.append(Row(
            key=key, name=b.get("fullname", b.get("name", "?")), workload=workload, mode=ei.get("mode", ""),
            engine=engine,
            size=ei.get("size"), size_label=size_label(ei), median=st["median"], min=st["min"], max=st["max"],
            rounds=st.get("rounds", 0), guest_instructions=ei.get("guest_instructions"),
            guest_mips=ei.get("guest_mips"), native_seconds=ei.get("native_seconds"), slowdown=slowdown,
            exits=ei.get("exits"), bt_over_bare=ratio, jit_over_interp=jit_ratio,
            meets_bar=None if slowdown is None else slowdown <= bar,
            previous=prev[0] if prev else None, previous_median=prev_median, change=change,
            regressed=change is not None and change > fail_above,
        ))
    rows.sort(key=lambda r: (r.workload, r.mode, r.size or 0, r.engine))
    return rows


# ---- formatting (shared with the dashboard) --------------------------------------------------

def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} µs"


def fmt_mips(m: float | None) -> str:
    return "n/a" if m is None else f"{m:,.1f}"


def fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def fmt_change(pct: float | None) -> str:
    return "-" if pct is None else f"{pct:+.1f}%"


def fmt_bar(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "no")


def fmt_count(n: int | None) -> str:
    return "n/a" if n is None else f"{n:,}"


def table(run: Run, rows: list[Row], bar: float = DEFAULT_BAR, fail_above: float = DEFAULT_FAIL_ABOVE,
          against: Run | None = None):
    """A rich Table of one run's rows (``against``: the baseline the changes are against, if chosen)."""
    from rich.table import Table

    prev = f"run {against.number}" if against is not None else "the previous run"
    t = Table(title=f"run {run.number} · commit {run.commit_short} · {run.machine_id} · {run.datetime[:19]}",
              caption=f"bar: slowdown vs native <= {bar}; regressed: median > {fail_above}% above {prev}",
              title_justify="left", caption_justify="left")
    t.add_column("workload")
    t.add_column("mode")
    t.add_column("engine")
    t.add_column("size")
    t.add_column("median", justify="right")
    t.add_column("guest MIPS", justify="right")
    t.add_column("native", justify="right")
    t.add_column("slowdown", justify="right")
    t.add_column("bt/bare", justify="right")
    t.add_column("jit/interp", justify="right")
    t.add_column(f"bar ≤{bar}", justify="center")
    t.add_column("vs prev", justify="right")
    for r in rows:
        bar_cell = fmt_bar(r.meets_bar)
        bar_cell = {"yes": "[green]yes[/]", "no": "[red]no[/]"}.get(bar_cell, bar_cell)
        change = fmt_change(r.change)
        if r.regressed:
            change = f"[bold red]{change} REGRESSED[/]"
        elif r.change is not None and r.change < -fail_above:
            change = f"[green]{change}[/]"
        t.add_row(r.workload, r.mode, r.engine, r.size_label, fmt_seconds(r.median), fmt_mips(r.guest_mips),
                  fmt_seconds(r.native_seconds), fmt_ratio(r.slowdown), fmt_ratio(r.bt_over_bare),
                  fmt_ratio(r.jit_over_interp), bar_cell, change,
                  style="on #3a0000" if r.regressed else None)
    return t


# ---- running the suites ----------------------------------------------------------------------

class _ProgressPlugin:
    """A pytest plugin that moves a rich progress bar as the benchmarks finish."""

    def __init__(self, progress):
        self.progress = progress
        self.task = progress.add_task("collecting", total=None)
        self.failed = 0

    def pytest_collection_finish(self, session):
        self.progress.update(self.task, total=len(session.items), description="benchmarks")

    def pytest_runtest_logstart(self, nodeid, location):
        from rich.markup import escape

        failed = f" ({self.failed} failed)" if self.failed else ""
        self.progress.update(self.task, description=escape(nodeid.rsplit("::", 1)[-1]) + failed)

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.failed += 1

    def pytest_runtest_logfinish(self, nodeid, location):
        self.progress.advance(self.task)


def _isatty(f) -> bool:
    try:
        return f.isatty()
    except (AttributeError, ValueError):
        return False


def _machine_id() -> str:
    from pytest_benchmark.utils import get_machine_id

    return get_machine_id()


def find_baseline(runs: list[Run], machine_id: str, size: str, wanted: str | bool = True) -> Run | None:
    """The stored run to compare against: run number ``wanted``, or the latest at ``size`` on ``machine_id``."""
    mine = [r for r in runs if r.machine_id == machine_id]
    if wanted is not True:
        wanted = str(wanted).lstrip("#")
        found = [r for r in mine if r.number == wanted.zfill(4) or r.path.name.startswith(wanted)]
        return found[-1] if found else None
    same = [r for r in mine if r.size_label == size]
    return same[-1] if same else None


def run_suite(size: str = "bench", storage: str | os.PathLike | None = None, compare: str | bool = False,
              fail_above: int = DEFAULT_FAIL_ABOVE, bar: float = DEFAULT_BAR, keyword: str | None = None,
              verbose: bool = False, out=None, err=None) -> int:
    """Runs ``bench/`` at ``size``, stores the run in ``storage`` and prints its table; returns an exit status.

    0: every benchmark ran (and, with ``compare``, none regressed past ``fail_above`` percent);
    1: a regression, or a benchmark failed; 2: bad input (raised as ConfigError).
    """
    try:
        import pytest
        import pytest_benchmark  # noqa: F401
    except ImportError:
        raise ConfigError("vmcore bench needs pytest and pytest-benchmark: pip install -e '.[test]'") from None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if not BENCH_DIR.is_dir():
        raise ConfigError(f"vmcore bench runs the suites in {BENCH_DIR}, which is not there (not a source checkout?)")
    if size not in SIZES:
        raise ConfigError(f"workload size must be one of {SIZES}, not {size!r}")
    if fail_above < 0:
        raise ConfigError(f"--fail-above must be a percentage >= 0, not {fail_above}")
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    console = Console(file=out, highlight=False, width=None if _isatty(out) else 160)
    progress_console = Console(file=err)
    storage = Path(storage if storage is not None else DEFAULT_STORAGE).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    machine_id = _machine_id()
    before = load_runs(storage)
    seen = {r.path for r in before}

    args = [str(BENCH_DIR), f"--workload-size={size}", f"--rootdir={REPO_ROOT}", "-p", "no:cacheprovider",
            "--capture=no", "--benchmark-autosave", f"--benchmark-storage={storage}"]
    if keyword:
        args += ["-k", keyword]
    baseline = None
    if compare:
        baseline = find_baseline(before, machine_id, size, compare)
        if baseline is None:
            if compare is not True:
                raise ConfigError(f"no stored run {compare!r} under {storage / machine_id}")
            console.print(f"[yellow]nothing stored at size {size} on {machine_id} to compare against: "
                          f"this run becomes the baseline[/]")
        else:
            console.print(f"comparing against run {baseline.number} (commit {baseline.commit_short}, "
                          f"{baseline.datetime[:19]}); fails above +{fail_above}% median")
            args += [f"--benchmark-compare={baseline.path.name.split('_', 1)[0]}",
                     f"--benchmark-compare-fail=median:{fail_above}%"]
    if verbose:
        args += ["-v"]
    else:
        args += ["-q", "--benchmark-quiet"]

    captured = io.StringIO()
    regression = False
    with contextlib.chdir(REPO_ROOT), contextlib.ExitStack() as stack:   # the commit recorded is the checkout's
        plugins = []
        if not verbose:
            progress = stack.enter_context(Progress(
                SpinnerColumn(), TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=progress_console, transient=True, redirect_stdout=False,
                redirect_stderr=False))
            plugins.append(_ProgressPlugin(progress))
            stack.enter_context(contextlib.redirect_stdout(captured))
            stack.enter_context(contextlib.redirect_stderr(captured))
        try:
            status = pytest.main(args, plugins=plugins)
        except Exception as e:     # pytest-benchmark's PerformanceRegression, raised from the terminal summary
            if type(e).__name__ != "PerformanceRegression":
                raise
            regression, status = True, 1
    status = int(status)
    log = captured.getvalue()
    if "Performance has regressed" in log:
        regression = True

    new = [r for r in load_runs(storage) if r.path not in seen]
    all_runs = before + new
    for run in new:
        console.print(table(run, rows_of(run, all_runs, bar, fail_above, against=baseline), bar, fail_above,
                            against=baseline))
        console.print(f"stored: {run.path}")
    if not new:
        console.print("[red]no run was stored (did any benchmark pass?)[/]")
    if status != 0 and not verbose:
        # pytest's own report: failures, errors and pytest-benchmark's regression message
        print(log, file=err, end="")
    if regression:
        console.print(f"[bold red]performance regressed: a median grew more than {fail_above}% against run "
                      f"{baseline.number if baseline else '?'}[/]")
        return 1
    if status != 0:
        console.print(f"[red]pytest exited with status {status}[/]")
        return 1
    return 0 if new else 1


__all__ = ["DEFAULT_BAR", "DEFAULT_FAIL_ABOVE", "DEFAULT_STORAGE", "Row", "Run", "find_baseline",
           "load_runs", "rows_of", "run_suite", "series_key", "size_label", "table"]
