"""Single-step vectors captured from real 80286 and 80386EX chips (real mode): every file.

The pass rate per file is printed (pytest -s, or in the report on failure). The overall
rate must stay at or above 99.5 %, and a file may fail only if it is listed in EXPLAINED
with the hardware difference that causes it.
"""
import pytest

import sst_runner

# The 286's word string instructions at offset FFFFh: the chip updates (E)SI/(E)DI for the
# element before it raises #13, where the 386 and later fault with the registers untouched so
# that the instruction restarts (SDM Vol. 3 §6.5, faults are restartable). vmcore models the
# restartable behaviour for every CPU model.
STRING_WORD_AT_FFFF = "286 string-word access at offset FFFFh updates SI/DI before #13"
EXPLAINED = {name: STRING_WORD_AT_FFFF for name in ("6D", "6F", "A5", "A7", "AB", "AD", "AF")}


@pytest.fixture(scope="module")
def results():
    if not sst_runner.SST_DIR.is_dir():
        pytest.fail(f"single-step vectors not found at {sst_runner.SST_DIR} (set VMCORE_SST_DIR)")
    return sst_runner.run_all(keep_failures=3)


def test_every_vector_file_ran(results):
    names = {r.name for r in results}
    assert len(results) == 326
    assert "386/00" in names and "D4" in names
    assert sum(r.total for r in results) == 65500


def test_pass_rate_per_file_and_overall(results, capsys):
    total = sum(r.total for r in results)
    passed = sum(r.passed for r in results)
    with capsys.disabled():
        print()
        for r in results:
            if r.failed:
                print(f"  sst {r.name:7s} {r.passed:4d}/{r.total}  {100.0 * r.passed / r.total:5.1f}%"
                      f"  ({EXPLAINED.get(r.name, 'UNEXPLAINED')})")
        print(f"  sst overall {passed}/{total} = {100.0 * passed / total:.2f}% "
              f"({sum(1 for r in results if not r.failed)} of {len(results)} files pass completely)")
    assert passed / total >= 0.995


def test_only_explained_files_fail(results):
    unexplained = [r for r in results if r.failed and r.name not in EXPLAINED]
    assert not unexplained, "\n".join(f for r in unexplained for f in r.failures)


def test_explained_failures_are_only_the_explained_kind(results):
    for r in results:
        if r.name in EXPLAINED and r.failed:
            assert r.passed / r.total >= 0.9, r.failures
            for failure in r.failures:
                assert "si=0x" in failure or "di=0x" in failure or "cx=0x" in failure, failure
