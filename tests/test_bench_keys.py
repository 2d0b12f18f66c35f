"""Every benchmark in bench/ records the extra_info keys documented in vmcore.benchkeys.

The suite runs here at the tiny size (milliseconds per workload) in a separate pytest process,
exactly as a user would run it, and its --benchmark-json output is checked.
"""

import json
import subprocess
import sys

import pytest

from vmcore import benchkeys, workloads
from vmcore.bench import BENCH_DIR, REPO_ROOT

pytest.importorskip("pytest_benchmark")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-keys") / "tiny.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(BENCH_DIR), "--workload-size=tiny", f"--benchmark-json={out}",
         "-p", "no:cacheprovider", "-q"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


def test_every_benchmark_records_every_documented_key(tiny_run):
    assert tiny_run["benchmarks"], "the suite ran no benchmark"
    for b in tiny_run["benchmarks"]:
        assert benchkeys.check(b["extra_info"]) == [], b["fullname"]
        keys = set(b["extra_info"])
        # the guest kernel's benchmarks add the optional keys; a nanobenchmark has no native run
        # a boot neither (bench/test_linux.py)
        no_native = "op" in keys or "boot" in keys
        required = set(benchkeys.EXTRA_INFO_KEYS) - (set(benchkeys.NATIVE_KEYS) if no_native else set())
        assert required <= keys <= set(benchkeys.EXTRA_INFO_KEYS) | set(benchkeys.OPTIONAL_KEYS), b["fullname"]


def test_every_workload_is_benchmarked_at_its_tiny_size(tiny_run):
    seen = {b["extra_info"]["workload"]: b["extra_info"]["size"] for b in tiny_run["benchmarks"]
            if "boot" not in b["extra_info"]}
    expected = {name: w.sizes["tiny"] for name, w in workloads.WORKLOADS.items()}
    expected.update({name: w.sizes["tiny"] for name, w in workloads.KERNEL_WORKLOADS.items()})
    expected.update({f"nano-{op}": n.sizes["tiny"] for op, n in workloads.NANOBENCHMARKS.items()})
    assert seen == expected


def test_every_workload_is_benchmarked_on_both_engines(tiny_run):
    seen = {(b["extra_info"]["workload"], b["extra_info"]["mode"], b["extra_info"]["engine"])
            for b in tiny_run["benchmarks"]}
    for name in (*workloads.WORKLOADS, *workloads.KERNEL_WORKLOADS):
        for mode in ("bare", "bt"):
            assert {(name, mode, "interp"), (name, mode, "jit")} <= seen, (name, mode)
    for b in tiny_run["benchmarks"]:
        ei = b["extra_info"]
        # the translator's counters are there exactly when the JIT ran the benchmark
        assert ("jit_blocks_translated" in ei["stats"]) == (ei["engine"] == "jit"), b["fullname"]


def test_recorded_numbers_agree_with_each_other(tiny_run):
    for b in tiny_run["benchmarks"]:
        ei, median = b["extra_info"], b["stats"]["median"]
        assert ei["guest_mips"] == pytest.approx(ei["guest_instructions"] / median / 1e6)
        if "op" not in ei and "boot" not in ei:
            assert ei["slowdown_vs_native"] == pytest.approx(median / ei["native_seconds"])
        assert ei["exits"] == sum(v for k, v in ei["stats"].items() if k.startswith("exits_"))
        assert ei["stats"]["instructions"] == ei["guest_instructions"]


def test_the_linux_boot_is_benchmarked_in_bare_and_bt(tmp_path):
    """bench/test_linux.py at its small size (one quick boot per mode; it has no tiny size)."""
    if not ((REPO_ROOT / "build" / "linux" / "bzImage").exists() and (REPO_ROOT / "build" / "linux" / "initrd.img").exists()):
        pytest.skip("no kernel in build/linux (tools/fetch_linux.py fetches it)")
    out = tmp_path / "linux.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(BENCH_DIR / "test_linux.py"), "--workload-size=small",
         f"--benchmark-json={out}", "-p", "no:cacheprovider", "-q"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = json.loads(out.read_text())
    boots = {b["extra_info"]["mode"]: b["extra_info"] for b in run["benchmarks"]}
    assert set(boots) == {"bare", "bt"}
    for ei in boots.values():
        assert benchkeys.check(ei) == [] and "boot" in ei and "native_seconds" not in ei
    # the same guest, instruction for instruction, with and without the monitor
    assert boots["bare"]["guest_instructions"] == boots["bt"]["guest_instructions"] > 1_000_000_000
    assert boots["bt"]["stats"]["callouts"] > 0 and boots["bare"]["stats"].get("callouts", 0) == 0


def test_every_key_is_documented_in_the_one_place():
    for key in benchkeys.EXTRA_INFO_KEYS:
        assert f"``{key}``" in benchkeys.__doc__, key


def test_check_names_what_is_wrong():
    good = {"workload": "sieve", "mode": "bare", "engine": "interp", "size": 10, "guest_instructions": 5, "guest_mips": 1.5,
            "native_seconds": 0.1, "slowdown_vs_native": 3.0, "exits": 1, "stats": {"instructions": 5}}
    assert benchkeys.check(good) == []
    assert benchkeys.check({k: v for k, v in good.items() if k != "guest_mips"}) == ["missing key 'guest_mips'"]
    assert "'exits' is bool True, not int" in benchkeys.check({**good, "exits": True})
    assert benchkeys.check({**good, "mode": "kvm"}) == ["mode 'kvm' is none of ('bare', 'bt', 'trap')"]
    assert benchkeys.check({**good, "engine": "tcg"}) == ["engine 'tcg' is none of ('interp', 'jit')"]
    assert benchkeys.check({**good, "native_seconds": 0.0}) == ["'native_seconds' is 0.0, not positive"]
    assert benchkeys.check({**good, "stats": {"tlb_hits": 1.5}})[0].startswith("'stats' has entries")
