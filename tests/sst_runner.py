"""Runs the SingleStepTests vectors captured from real 80286 and 80386EX chips
(../shared/testdata/sst, format in its README) on vmcore, one instruction each.

    python tests/sst_runner.py            # every file, pass rate per file
    python tests/sst_runner.py 27 2F      # chosen files, with the failures
"""
from __future__ import annotations

import gzip
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import vmcore

SST_DIR = Path(os.environ.get("VMCORE_SST_DIR", Path(__file__).resolve().parents[2] / "shared" / "testdata" / "sst"))

REGS_286 = ("ax", "bx", "cx", "dx", "sp", "bp", "si", "di")
SEGS = ("cs", "ss", "ds", "es")
REGS_386 = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp")
SEGS_386 = ("cs", "ds", "es", "fs", "gs", "ss")


@dataclass
class FileResult:
    name: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.passed + self.failed


def load_metadata() -> dict:
    return json.loads((SST_DIR / "80286" / "metadata.json").read_text())["opcodes"]


def flags_mask_for(metadata: dict, stem: str) -> int:
    """The undefined-flags mask of a file stem such as 'D4' or 'F6.7'."""
    op, _, reg = stem.partition(".")
    entry = metadata.get(op, {})
    if "reg" in entry:
        entry = entry["reg"].get(reg or "0", {})
    return entry.get("flags-mask", 0xFFFF)


def revoked(cpu_dir: Path) -> set[str]:
    path = cpu_dir / "revocation_list.txt"
    if not path.exists():
        return set()
    return {line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


class Runner:
    """One machine reused for every test: only the bytes a test touches are reset."""

    def __init__(self, cpu: str):
        self.cpu = cpu
        self.m = vmcore.Machine(memory_mb=2, cpu="80286" if cpu == "286" else "80386", devices=False)
        self.mem = self.m.memory

    def run(self, test: dict, flags_mask: int) -> str | None:
        """None if the test passes, else what differed."""
        m = self.m
        init, final = test["initial"], test["final"]
        m.reset()
        regs = init["regs"]
        if self.cpu == "286":
            for r in REGS_286:
                m.reg_write(r, regs[r])
            for s in SEGS:
                m.reg_write(s, regs[s])
            m.reg_write("eip", regs["ip"])
            m.reg_write("eflags", regs["flags"] & 0x0FFF)
        else:
            for r in REGS_386:
                m.reg_write(r, regs[r])
            for s in SEGS_386:
                m.reg_write(s, regs[s])
            m.reg_write("eip", regs["eip"])
            m.reg_write("eflags", regs["eflags"] & 0x0003FFFF)
        m._engine.idtr_set(0, 0x3FF)
        touched = []
        for addr, byte in init["ram"]:
            self.mem[addr] = byte
            touched.append(addr)
        m._engine.flush()
        try:
            r = m.run(count=1000)
            return self._compare(test, r, flags_mask)
        finally:
            for addr in touched:
                self.mem[addr] = 0
            for addr, _ in final["ram"]:
                self.mem[addr] = 0

    def _compare(self, test: dict, r, flags_mask: int) -> str | None:
        m = self.m
        init, final = test["initial"], test["final"]
        if r.exit is not vmcore.Exit.HLT:
            return f"ended with {r.exit.value}: {r.reason}"
        diffs = []
        if self.cpu == "286":
            want = dict(init["regs"])
            want["flags"] &= 0x0FFF
            want.update(final["regs"])
            got = {reg: m.reg_read(reg) for reg in REGS_286 + SEGS}
            got["ip"] = m.reg_read("eip") & 0xFFFF
            got["flags"] = m.reg_read("eflags") & 0xFFFF
            fmask = flags_mask
            wide = 0xFFFF
        else:
            want = dict(init["regs"])
            want["eflags"] &= 0x0003FFFF
            want.update(final["regs"])
            want["eflags"] &= 0x0003FFFF
            got = {reg: m.reg_read(reg) for reg in REGS_386 + SEGS_386}
            got["eip"] = m.reg_read("eip")
            got["eflags"] = m.reg_read("eflags") & 0x0003FFFF
            fmask = 0x0003FFFF
            wide = 0xFFFFFFFF
        flags_key = "flags" if self.cpu == "286" else "eflags"
        for reg, value in got.items():
            expect = want[reg] & wide
            if reg == flags_key:
                if (value & fmask) != (expect & fmask):
                    diffs.append(f"{reg}={value:#x} want {expect:#x} (mask {fmask:#x})")
            elif value != expect:
                diffs.append(f"{reg}={value:#x} want {expect:#x}")
        flag_addr = None
        if "exception" in test:
            # the FLAGS word the exception pushed: first push below the initial SS:SP. (The
            # data's flag_address is one byte low when SP is odd.)
            regs = init["regs"]
            sp = regs["sp"] if self.cpu == "286" else regs["esp"]
            flag_addr = (regs["ss"] << 4) + ((sp - 2) & 0xFFFF)
        for addr, byte in final["ram"]:
            value = int(self.mem[addr])
            mask = 0xFF
            if flag_addr is not None and addr == flag_addr:
                mask = fmask & 0xFF
            elif flag_addr is not None and addr == flag_addr + 1:
                mask = (fmask >> 8) & 0xFF
            if (value & mask) != (byte & mask):
                diffs.append(f"[{addr:#x}]={value:#04x} want {byte:#04x}")
        return "; ".join(diffs) or None


def run_file(path: Path, metadata: dict | None, cpu: str, runner: Runner | None = None,
             keep_failures: int = 5) -> FileResult:
    stem = path.name[: -len(".json.gz")]
    mask = flags_mask_for(metadata, stem) if metadata is not None else 0xFFFF
    skip = revoked(path.parent)
    runner = runner or Runner(cpu)
    result = FileResult(stem)
    with gzip.open(path, "rt") as f:
        tests = json.load(f)
    for test in tests:
        if test["hash"] in skip:
            result.skipped += 1
            continue
        why = runner.run(test, mask)
        if why is None:
            result.passed += 1
        else:
            result.failed += 1
            if len(result.failures) < keep_failures:
                result.failures.append(f"{stem} #{test['idx']} {test['name']!r}: {why}")
    return result


def run_all(only: list[str] | None = None, keep_failures: int = 5) -> list[FileResult]:
    metadata = load_metadata()
    results = []
    runner286 = Runner("286")
    for path in sorted((SST_DIR / "80286").glob("*.json.gz")):
        if only and path.name[: -len(".json.gz")].upper() not in only:
            continue
        results.append(run_file(path, metadata, "286", runner286, keep_failures))
    runner386 = Runner("386")
    for path in sorted((SST_DIR / "80386").glob("*.json.gz")):
        if only and "386/" + path.name[: -len(".json.gz")] not in only:
            continue
        r = run_file(path, None, "386", runner386, keep_failures)
        r.name = "386/" + r.name
        results.append(r)
    return results


def main(argv: list[str]) -> int:
    only = [a.upper() if not a.startswith("386/") else a for a in argv] or None
    results = run_all(only, keep_failures=20 if only else 3)
    total = sum(r.total for r in results)
    passed = sum(r.passed for r in results)
    for r in results:
        if r.failed or only:
            print(f"{r.name:8s} {r.passed:4d}/{r.total:<4d} {100.0 * r.passed / max(r.total, 1):6.1f}%")
            for f in r.failures:
                print("    " + f)
    print(f"overall: {passed}/{total} = {100.0 * passed / max(total, 1):.2f}% in {len(results)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
