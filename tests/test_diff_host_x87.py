"""The x87 FPU against the host CPU's own (tests/hostdiff/x87.py): random x87 sequences with
random operands (denormals, pseudo-denormals, unnormals, quiet and signalling NaNs, infinities,
zeros, BCD, integers of every width), every rounding and precision mode, masked and unmasked
exceptions (#MF natively as SIGFPE), run natively by runner.c in its x87 mode and in vmcore;
the full FPU state (CW, SW, TW, ST0-ST7: the FNSAVE image without its pointer fields), GPRs,
EFLAGS and the data and stack pages must agree.

    pytest tests/test_diff_host_x87.py                                     # 5e5 instructions, ~30 s
    VMCORE_HOST_DIFF_X87_INSNS=2000000 pytest tests/test_diff_host_x87.py  # more
    VMCORE_HOST_DIFF_X87_SEED=7 pytest tests/test_diff_host_x87.py         # other programs

Skips only when `gcc -m32` cannot build the runner.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import sys

import pytest

capstone = pytest.importorskip("capstone")
vmcore = pytest.importorskip("vmcore")

from hostdiff import harness, x87  # noqa: E402
from hostdiff.gen import CODE, DATA  # noqa: E402

DEFAULT_INSNS = 500_000         # the normal run: ~30 s (1e6 take ~60 s)
CHUNKS = 2
BASE_SEED = int(os.environ.get("VMCORE_HOST_DIFF_X87_SEED", "8087"))


def _budget() -> int:
    return int(float(os.environ.get("VMCORE_HOST_DIFF_X87_INSNS", DEFAULT_INSNS)))


@pytest.fixture(scope="module")
def runner():
    try:
        return harness.build_runner()
    except harness.RunnerUnavailable as e:
        pytest.skip(str(e))


_totals = {"executed": 0, "chunks": 0, "faulted": 0}


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_random_x87_sequences_match_the_host_cpu(runner, chunk):
    res = x87.campaign(BASE_SEED + chunk * 1_000_000, -(-_budget() // CHUNKS))
    _totals["executed"] += res.executed
    _totals["faulted"] += res.faulted
    _totals["chunks"] += 1
    sys.stderr.write(f"[x87 host diff chunk {chunk}: {res.programs} programs, {res.executed} instructions, "
                     f"{res.faulted} ended in #MF/SIGFPE, {res.seconds:.1f} s]\n")
    assert not res.failures, (f"{len(res.failures)} x87 program(s) differ between vmcore and the host CPU\n\n"
                              + "\n\n".join(res.failures))


def test_campaign_covered_the_budget_and_the_faults(runner):
    if _totals["chunks"] < CHUNKS:
        pytest.skip("the campaign chunks did not all run in this session")
    assert _totals["executed"] >= _budget()
    assert _totals["faulted"] > 0, "no program ended in an unmasked exception: #MF is not exercised"


def _program(code: bytes) -> x87.X87Program:
    p = x87.generate(BASE_SEED)
    return dataclasses.replace(p, code=code)


def test_known_results_on_both(runner):
    """FLDPI; FSTP m80 to DATA+0x400: pi's 80-bit encoding on the host and in vmcore, and the
    final FNSAVE image in the record is the empty FNINIT-like stack."""
    code = bytes.fromhex("be 00 00 20 00"         # mov esi, DATA
                         "db e3"                  # fninit
                         "d9 eb"                  # fldpi
                         "db be 00 04 00 00"      # fstp xword ptr [esi + 0x400]
                         "90")
    p = _program(code)
    host = x87.run_native([p])[0]
    vm = x87.run_vmcore(p)
    pi = bytes.fromhex("35c26821a2da0fc90040")
    assert host.status == "end" and host.data[0x400:0x40A] == pi == vm.data[0x400:0x40A]
    assert struct.unpack_from("<HxxHxxH", host.fpu) == (0x037F, 0x0000, 0xFFFF)
    assert x87.differences(vm, host) == []


def test_unmasked_exception_is_sigfpe_and_mf_at_the_same_place(runner):
    """An unmasked #Z, then a waiting FNOP: SIGFPE natively, #MF in vmcore, both at the FNOP,
    with the same FPU state (the signal frame's copy natively)."""
    code = bytes.fromhex("be 00 00 20 00"         # mov esi, DATA
                         "db e3"                  # fninit
                         "d9 ae c0 07 00 00"      # fldcw word ptr [esi + 0x7c0]
                         "d9 e8"                  # fld1
                         "d9 ee"                  # fldz
                         "de f9"                  # fdivp st(1)
                         "d9 d0"                  # fnop
                         "90")
    p = _program(code)
    data = bytearray(p.data)
    struct.pack_into("<H", data, x87.CW_TABLE, 0x037B)
    p = dataclasses.replace(p, data=bytes(data))
    host = x87.run_native([p])[0]
    vm = x87.run_vmcore(p)
    assert host.status == "SIGFPE" and host.eip == CODE + 19
    assert vm.status == "#16" and vm.eip == CODE + 19
    assert struct.unpack_from("<H", host.fpu, 4)[0] & 0x80, "ES in the host's image"
    assert x87.differences(vm, host) == []


def test_differences_see_a_wrong_register(runner):
    """The comparison is not vacuous: one bit of ST0 changed in vmcore's state is reported."""
    code = bytes.fromhex("be 00 00 20 00" "db e3" "d9 eb" "90")
    p = _program(code)
    host = x87.run_native([p])[0]
    vm = x87.run_vmcore(p)
    bad = bytearray(vm.fpu)
    bad[28] ^= 1
    diffs = x87.differences(dataclasses.replace(vm, fpu=bytes(bad)), host)
    assert diffs and diffs[0].startswith("FPU state differs at 1 byte")
    assert DATA  # the layout constants are importable for reports
