"""Host CPU as oracle: run generated programs natively (runner.c, a 32-bit process) and in
vmcore, compare registers, status flags (undefined ones masked), DF and the data and stack pages.

    from hostdiff import harness
    harness.build_runner()                       # raises RunnerUnavailable without gcc -m32
    result = harness.campaign(first_seed, target_instructions)
    result.failures                              # reports with seed, listing, first divergence

A mismatch is diagnosed by single-stepping both: vmcore with run(count=1), the host with
EFLAGS.TF (runner.c trace mode, one SIGTRAP per instruction, REP iterations one by one), and
comparing after every instruction with the flags undefined at that point masked.
"""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import gen
from .gen import ARITH, CODE, CODE_SIZE, DATA, DATA_SIZE, DF, REG32, STACK, STACK_SIZE, flag_names

HERE = Path(__file__).resolve().parent
RUNNER_SRC = HERE / "runner.c"
HLT = b"\xf4"
MEMORY_MB = 4                       # guest RAM covers CODE, DATA and STACK (all below 4 MiB)
VM_BUDGET = 2_000_000               # instructions per program before vmcore gives up
MAX_STEPS = 20_000                  # single steps recorded natively when diagnosing
COMPARED_FLAGS = ARITH | DF


class RunnerUnavailable(Exception):
    """gcc -m32 cannot build the runner (no multilib): the reason, for pytest.skip."""


# ---------------------------------------------------------------------------
# The native runner
# ---------------------------------------------------------------------------

def cache_dir() -> Path:
    env = os.environ.get("VMCORE_CACHE_DIR")
    return (Path(env) if env else Path.home() / ".cache" / "vmcore") / "hostdiff"


_runner: dict = {}


def build_runner() -> Path:
    """The runner binary, built on first use into the cache (keyed by a hash of runner.c)."""
    if "path" in _runner:
        return _runner["path"]
    if "error" in _runner:
        raise RunnerUnavailable(_runner["error"])
    src = RUNNER_SRC.read_bytes()
    key = hashlib.sha256(src + b"gcc -m32 -O2 -fno-pie -no-pie").hexdigest()[:16]
    out = cache_dir() / f"runner-{key}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        errors = []
        for extra in (["-static"], []):
            tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
            cmd = ["gcc", "-m32", "-O2", "-fno-pie", "-no-pie", *extra, "-o", str(tmp), str(RUNNER_SRC)]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as e:
                errors.append(f"{' '.join(cmd)}: {e}")
                continue
            if p.returncode == 0:
                os.replace(tmp, out)
                break
            tmp.unlink(missing_ok=True)
            errors.append(f"{' '.join(cmd)}:\n{p.stderr.strip()}")
        else:
            _runner["error"] = ("gcc -m32 cannot build the native runner (install gcc-multilib): "
                                + "\n".join(errors)[-1500:])
            raise RunnerUnavailable(_runner["error"])
    # the host must be able to run it (a 64-bit kernel without IA-32 emulation cannot)
    try:
        subprocess.run([str(out)], input=b"HDF1" + bytes(40), capture_output=True, timeout=60)
    except OSError as e:
        _runner["error"] = f"the host cannot run the 32-bit runner {out}: {e}"
        raise RunnerUnavailable(_runner["error"]) from e
    _runner["path"] = out
    return out


@dataclass
class State:
    status: str             # "end" (ran to the end of the code), "SIGSEGV"..., "#13"..., or vmcore's exit
    eip: int
    regs: dict              # eax..edi, eflags
    data: bytes
    stack: bytes
    instructions: int = 0   # vmcore only

    @property
    def ended(self) -> bool:
        return self.status == "end"


_HEAD = struct.Struct("<11I")      # status eip eax ecx edx ebx esp ebp esi edi eflags
_REC = _HEAD.size + DATA_SIZE + STACK_SIZE


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _record(buf: bytes, off: int) -> State:
    h = _HEAD.unpack_from(buf, off)
    regs = dict(zip(REG32, h[2:10]))
    regs["eflags"] = h[10]
    d0 = off + _HEAD.size
    return State("end" if h[0] == 0 else _signame(h[0]), h[1], regs, buf[d0:d0 + DATA_SIZE],
                 buf[d0 + DATA_SIZE:d0 + DATA_SIZE + STACK_SIZE])


def _native_input(programs, trace: bool) -> bytes:
    parts = [b"HDF1", struct.pack("<10I", 1 if trace else 0, len(programs), CODE, CODE_SIZE, DATA, DATA_SIZE,
                                  STACK, STACK_SIZE, MAX_STEPS, 0)]
    for p in programs:
        parts.append(struct.pack("<I", len(p.code)))
        parts.append(p.code)
        parts.append(struct.pack("<9I", *(p.regs[r] for r in REG32), p.regs["eflags"]))
        parts.append(p.data)
        parts.append(p.stack)
    return b"".join(parts)


def run_native(programs, trace: bool = False):
    """Run on the host CPU. Returns a State per program, or with trace=True a (steps, final)
    pair per program: steps are the states before the first instruction and after each one."""
    runner = build_runner()
    try:
        p = subprocess.run([str(runner)], input=_native_input(programs, trace), capture_output=True, timeout=600)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"native runner timed out on a batch of {len(programs)} programs (seeds "
                           f"{programs[0].seed}..{programs[-1].seed})") from e
    if p.returncode != 0:
        raise RuntimeError(f"native runner failed ({p.returncode}): {p.stderr.decode(errors='replace')[-2000:]}")
    out = p.stdout
    off = 0
    results = []
    for _ in programs:
        if trace:
            (n,) = struct.unpack_from("<I", out, off)
            off += 4
            steps = [_record(out, off + k * _REC) for k in range(n)]
            off += n * _REC
            final = _record(out, off)
            off += _REC
            results.append((steps, final))
        else:
            results.append(_record(out, off))
            off += _REC
    if off != len(out):
        raise RuntimeError(f"native runner output: {len(out)} bytes, expected {off}")
    return results


# ---------------------------------------------------------------------------
# vmcore
# ---------------------------------------------------------------------------

_vm: dict = {"m": None, "engine": "interp", "jit_instructions": 0}


def use_engine(engine: str) -> None:
    """Run the programs on this engine from now on; "jit" translates every block the first time it
    runs (threshold 1), so the programs run as host code, not in the interpreter."""
    _vm["engine"] = engine
    _vm["m"] = None
    _vm["jit_instructions"] = 0


def _machine(fresh: bool = False):
    import vmcore

    if fresh or _vm["m"] is None:
        m = vmcore.Machine(memory_mb=MEMORY_MB, mode="bare", engine=_vm["engine"])
        if _vm["engine"] == "jit":
            m._engine.jit_threshold = 1
        if not fresh:
            _vm["m"] = m
        return m
    return _vm["m"]


def vm_setup(m, p: gen.Program) -> None:
    m.mem_write(CODE, p.code + HLT)
    m.mem_write(DATA, p.data)
    m.mem_write(STACK, p.stack)
    for r in REG32:
        m.reg_write(r, p.regs[r])
    m.reg_write("eflags", p.regs["eflags"])
    m.reg_write("eip", CODE)


def vm_state(m, p: gen.Program, r=None) -> State:
    import vmcore

    regs = {n: m.reg_read(n) for n in REG32}
    regs["eflags"] = m.reg_read("eflags")
    eip = m.reg_read("eip")
    status = "running"
    n = 0
    if r is not None:
        n = r.instructions
        if r.exit is vmcore.Exit.HLT and eip == p.end + 1:
            status, eip, n = "end", p.end, n - 1          # at the HLT that stands for the native tail
        elif r.exit is vmcore.Exit.SHUTDOWN and r.exception:
            status, eip = f"#{r.exception[0]}", r.exception[2]
        elif r.exit is not vmcore.Exit.BUDGET:
            status = f"{r.exit.name}: {r.reason}"
    return State(status, eip, regs, m.mem_read(DATA, DATA_SIZE), m.mem_read(STACK, STACK_SIZE), n)


def run_vmcore(p: gen.Program) -> State:
    import vmcore

    m = _machine()
    vm_setup(m, p)
    before = m._engine.jit_stats().get("jit_instructions", 0)
    r = m.run(count=VM_BUDGET)
    _vm["jit_instructions"] += m._engine.jit_stats().get("jit_instructions", 0) - before
    s = vm_state(m, p, r)
    if r.exit is not vmcore.Exit.HLT:
        _vm["m"] = None                 # start the next program on a clean machine
    return s


# ---------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------

# the signal Linux sends a 32-bit process for each exception vector
_EQUIV = {"SIGFPE": {"#0"}, "SIGSEGV": {"#4", "#5", "#10", "#11", "#12", "#13", "#14"}, "SIGBUS": {"#17"},
          "SIGILL": {"#6"}, "SIGTRAP": {"#1", "#3"}}


def differences(vm: State, host: State, undef: int) -> list[str]:
    out = []
    if vm.status != host.status and vm.status not in _EQUIV.get(host.status, ()):
        out.append(f"stopped by {vm.status} (vmcore) vs {host.status} (host)")
    if vm.eip != host.eip:
        out.append(f"eip {vm.eip:#010x} vs {host.eip:#010x}")
    for n in REG32:
        if vm.regs[n] != host.regs[n]:
            out.append(f"{n} {vm.regs[n]:#010x} vs {host.regs[n]:#010x}")
    mask = COMPARED_FLAGS & ~undef
    fa, fb = vm.regs["eflags"] & mask, host.regs["eflags"] & mask
    if fa != fb:
        out.append(f"eflags {vm.regs['eflags']:#x} vs {host.regs['eflags']:#x}: differ in {flag_names(fa ^ fb)} "
                   f"(undefined, not compared: {flag_names(undef & ARITH)})")
    for name, base, a, b in (("data", DATA, vm.data, host.data), ("stack", STACK, vm.stack, host.stack)):
        if a != b:
            diff = [i for i in range(len(a)) if a[i] != b[i]]
            shown = ", ".join(f"{base + i:#x}: {a[i]:02x} vs {b[i]:02x}" for i in diff[:8])
            out.append(f"{name} page differs at {len(diff)} byte(s): {shown}")
    return out


# ---------------------------------------------------------------------------
# Diagnosis
# ---------------------------------------------------------------------------

def _disasm():
    import capstone

    return capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)


def listing(p: gen.Program, mark: int | None = None, around: int | None = None) -> str:
    lines = []
    for insn in _disasm().disasm(p.code, CODE):
        tag = ">>" if insn.address == mark else "  "
        lines.append(f"{tag} {insn.address:08x}  {insn.bytes.hex(' '):<30} {insn.mnemonic} {insn.op_str}")
    if around is not None and mark is not None:
        idx = next((i for i, line in enumerate(lines) if line.startswith(">>")), None)
        if idx is not None:
            lines = lines[max(0, idx - around): idx + around + 1]
    return "\n".join(lines)


def disasm_at(p: gen.Program, addr: int) -> str:
    off = addr - CODE
    if not 0 <= off < len(p.code):
        return f"{addr:#010x}: (outside the code)"
    insn = next(_disasm().disasm(p.code[off:off + 16], addr), None)
    if insn is None:
        return f"{addr:#010x}: {p.code[off:off + 8].hex(' ')} (capstone cannot decode)"
    return f"{addr:#010x}: {insn.bytes.hex(' ')}  {insn.mnemonic} {insn.op_str}"


def regfile(s: State) -> str:
    r = s.regs
    return ("  ".join(f"{n}={r[n]:08x}" for n in REG32) +
            f"\n    eip={s.eip:08x} eflags={r['eflags']:08x} ({flag_names(r['eflags'])}) [{s.status}]")


def vm_trace(p: gen.Program, limit: int = MAX_STEPS) -> list[State]:
    """vmcore single-stepped: the state before the first instruction and after each one (a REP
    instruction runs to its end as one step), up to the end of the code or a stop."""
    import vmcore

    m = _machine(fresh=True)
    vm_setup(m, p)
    states = [vm_state(m, p)]
    states[0].status = "end" if states[0].eip == p.end else "running"
    while len(states) < limit and states[-1].eip != p.end:
        before = m.reg_read("eip")
        for _ in range(100_000):
            r = m.run(count=1)
            if r.exit is not vmcore.Exit.BUDGET or m.reg_read("eip") != before:
                break
        s = vm_state(m, p, r)
        if s.status == "running" and s.eip == p.end:
            s.status = "end"
        states.append(s)
        if r.exit is not vmcore.Exit.BUDGET:
            break
    return states


def host_trace(p: gen.Program) -> tuple[list[State], State]:
    steps, final = run_native([p], trace=True)[0]
    out = []
    for s in steps:
        if out and s.eip == out[-1].eip:
            continue                    # after one iteration of a REP instruction that goes on
        out.append(s)
    for s in out:
        s.status = "end" if s.eip == p.end else "running"
    if final.status != "end":
        out.append(final)
    return out, final


def first_divergence(p: gen.Program, vm_program: gen.Program | None = None):
    """Step both; return (k, vm_before, host_before, vm_after, host_after, undef) for the first
    instruction k (0-based, dynamic) after which they differ, or None. (``vm_program``: other
    bytes for vmcore, to test the diagnosis itself.)"""
    vms = vm_trace(vm_program or p)
    hosts, _ = host_trace(p)
    by_addr = {it.addr: it for it in p.items}
    undef = 0
    for k in range(1, min(len(vms), len(hosts))):
        it = by_addr.get(vms[k - 1].eip)
        if it is not None:
            undef = it.effect(undef)
        if differences(vms[k], hosts[k], undef):
            return k - 1, vms[k - 1], hosts[k - 1], vms[k], hosts[k], undef
    if len(vms) != len(hosts):
        k = min(len(vms), len(hosts))
        return k - 1, vms[k - 1], hosts[k - 1], vms[min(k, len(vms) - 1)], hosts[min(k, len(hosts) - 1)], undef
    return None


def report(p: gen.Program, vm: State, host: State, vm_program: gen.Program | None = None) -> str:
    diffs = differences(vm, host, p.final_undef)
    out = [f"seed {p.seed}: vmcore and the host CPU differ ({len(p.code)} code bytes, "
           f"{vm.instructions} instructions executed by vmcore)",
           "  " + "\n  ".join(diffs)]
    try:
        found = first_divergence(p, vm_program)
    except Exception as e:              # the diagnosis must not hide the mismatch itself
        found = None
        out.append(f"(single-step diagnosis failed: {type(e).__name__}: {e})")
    if found:
        k, vb, hb, va, ha, undef = found
        out.append(f"first divergence at executed instruction #{k}: {disasm_at(p, vb.eip)}")
        if vb.eip != hb.eip:
            out.append(f"  (the host was at {disasm_at(p, hb.eip)})")
        out.append(f"  undefined flags after it (not compared): {flag_names(undef & ARITH)}")
        out.append("  " + "\n  ".join(differences(va, ha, undef)))
        out.append(f"  before, vmcore: {regfile(vb)}")
        out.append(f"  before, host:   {regfile(hb)}")
        out.append(f"  after,  vmcore: {regfile(va)}")
        out.append(f"  after,  host:   {regfile(ha)}")
        out.append("listing around it:\n" + listing(p, mark=vb.eip, around=10))
    elif not any(line.startswith("(single-step") for line in out):
        out.append("(single-stepped, both agree after every instruction: the difference depends on "
                   "running in blocks -- compare run(count=1) with run())")
    out.append(f"final vmcore: {regfile(vm)}")
    out.append(f"final host:   {regfile(host)}")
    out.append("initial: " + "  ".join(f"{n}={p.regs[n]:08x}" for n in REG32 + ("eflags",)))
    out.append("program:\n" + listing(p))
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Campaigns
# ---------------------------------------------------------------------------

@dataclass
class Result:
    programs: int = 0
    executed: int = 0               # guest instructions executed (vmcore's count, without the HLT)
    generated: int = 0              # instructions in the programs
    failures: list = field(default_factory=list)
    seconds: float = 0.0
    families: dict = field(default_factory=dict)


def campaign(first_seed: int, target_insns: int, batch: int = 400, max_failures: int = 3,
             time_limit: float | None = None) -> Result:
    """Programs seeded first_seed, first_seed + 1, ... until vmcore has executed target_insns
    instructions. Each batch of programs runs in one native process while vmcore runs it too."""
    res = Result()
    t0 = time.perf_counter()
    seed = first_seed
    while res.executed < target_insns and len(res.failures) < max_failures:
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
        progs = [gen.generate(s) for s in range(seed, seed + batch)]
        seed += batch
        runner = build_runner()
        with tempfile.TemporaryFile() as inp:
            inp.write(_native_input(progs, False))
            inp.seek(0)
            proc = subprocess.Popen([str(runner)], stdin=inp, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                vms = [run_vmcore(p) for p in progs]    # meanwhile, on the other core
                out, err = proc.communicate(timeout=600)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"native runner failed ({proc.returncode}) on seeds {progs[0].seed}.."
                               f"{progs[-1].seed}: {err.decode(errors='replace')[-2000:]}")
        if len(out) != len(progs) * _REC:
            raise RuntimeError(f"native runner output: {len(out)} bytes for {len(progs)} programs")
        for i, (p, vm) in enumerate(zip(progs, vms)):
            host = _record(out, i * _REC)
            res.programs += 1
            res.executed += vm.instructions
            res.generated += len(p.items)
            for it in p.items:
                res.families[it.family] = res.families.get(it.family, 0) + 1
            if differences(vm, host, p.final_undef) or host.ended == p.faults:
                if len(res.failures) < max_failures:
                    res.failures.append(report(p, vm, host))
                else:
                    break
    res.seconds = time.perf_counter() - t0
    return res
