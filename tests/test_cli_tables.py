"""`vmcore run` prints its summary and the engine counters as rich tables, with the same information."""

import dataclasses
import re

from vmcore import cli, workloads


def test_run_prints_the_summary_and_counters_as_tables(capsys):
    status = cli.main(["run", "sieve", "--size", "tiny", "--stats"])
    out = capsys.readouterr().out
    assert status == 0, out
    size = workloads.WORKLOADS["sieve"].sizes["tiny"]
    assert f"sieve size={size} checksum=0x" in out                      # the guest's own console, as is
    for label in ("exit", "guest instructions", "vmcore time", "guest MIPS", "native time", "output matches",
                  "slowdown vs native"):
        assert re.search(rf"^{label} +\S", out, re.M), label
    assert re.search(r"^exit +debug_exit ", out, re.M)
    assert re.search(r"^output matches +yes *$", out, re.M)
    assert "engine counters" in out
    counters = dict(re.findall(r"^│ (\w+) +│ +([\d,]+) │$", out, re.M))
    assert "instructions" in counters and "tlb_hits" in counters
    instructions = re.search(r"^guest instructions +([\d,]+)", out, re.M)[1]
    assert counters["instructions"] == instructions


def test_run_keeps_brackets_in_the_exit_reason(capsys, monkeypatch):
    """rich markup must not eat text such as a disassembly's [ebx] in the exit line."""
    real_run = cli.Machine.run

    def run(self, *args, **kwargs):
        r = real_run(self, *args, **kwargs)
        return dataclasses.replace(r, exit=cli.Exit.UNIMPLEMENTED,
                                   reason="not implemented: fld dword ptr [ebx] [bold] (d9 03)")

    monkeypatch.setattr(cli.Machine, "run", run)
    status = cli.main(["run", "sieve", "--size", "tiny", "--no-native"])
    out = capsys.readouterr().out
    assert status == cli.STATUS[cli.Exit.UNIMPLEMENTED]
    assert "not implemented: fld dword ptr [ebx] [bold] (d9 03)" in out
