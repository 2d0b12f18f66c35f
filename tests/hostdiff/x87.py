"""The host-CPU differential for the x87 FPU: random x87 sequences run natively (runner.c in its
x87 mode, which appends the final FNSAVE image to every record) and in vmcore, compared on the
full FPU state (control, status and tag words, ST0-ST7), the GPRs, EFLAGS and the data and
stack pages.

A program starts with ``mov esi, DATA`` and an FRSTOR of a random initial state (rounding and
precision control, masks, TOP, tags, registers), then runs 40-120 random x87 instructions:
every register form the decoder accepts (gen_x87.py, the aliases included) and every memory
form with [esi+disp32] operands (m16/m32/m64 integers, m32/m64/m80 reals, m80 BCD; some
straddle the page boundary), FLDCW from a table of control words (all rounding and precision
modes, some with unmasked exceptions), FNSTENV/FLDENV, FNSAVE/FRSTOR (32- and 16-bit),
FXSAVE/FXRSTOR, FNSTSW, FNCLEX, FNINIT, FWAIT, and SAHF with random flags for FCMOVcc. The
operands are zeros, denormals, pseudo-denormals, unnormals, normals of every magnitude,
infinities, quiet and signalling NaNs, the indefinite, pseudo-NaNs and pseudo-infinities.
An unmasked exception ends a program at the next waiting instruction: SIGFPE natively, #MF
(CR0.NE = 1) in vmcore, compared at the same EIP with the same state.

Compared with the pointer fields masked (FIP, FCS, FOP, FDP, FDS, in the final image and in
the images FNSTENV/FNSAVE/FXSAVE store): the host process has other selectors, and the host
is an AMD or a newer Intel CPU, which record FOP and FDP only on unmasked exceptions
(CPUID.7.EBX FDP_EXCPTN_ONLY; AMD's FXSAVE) where a P6 records them always. FXSAVE's MXCSR,
MXCSR_MASK and XMM area are not compared either (this CPU has no SSE).
"""

from __future__ import annotations

import random
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from . import gen, harness
from .gen import CODE, CODE_SIZE, DATA, DATA_SIZE, REG32, STACK, STACK_SIZE

import sys  # noqa: E402
sys.path.insert(0, str(harness.HERE.parent.parent / "vmcore" / "_core"))
import gen_x87  # noqa: E402

FPU_SIZE = 108
_HEAD = struct.Struct("<11I")
_REC = _HEAD.size + DATA_SIZE + STACK_SIZE + FPU_SIZE
MODE_X87 = 2

# data page layout (offsets from DATA)
POOL = [(0x000, 0x400), (0xFC0, 0x1400)]        # operands (some straddle DATA + 0x1000)
STORE = [(0x400, 0x7C0), (0x1400, 0x1800)]     # store destinations
CW_TABLE = 0x7C0                                # 32 control words for FLDCW
ENV32, ENV16, SAVE32, FXS, SAVE16 = 0x800, 0x840, 0x880, 0x900, 0xB00
FXR = 0xC00                                     # FXRSTOR source (valid MXCSR)
RST16 = 0xD80                                   # FRSTOR 16-bit source
INIT_IMG, RST_A, RST_B, LDENV32, LDENV16 = 0xE00, 0xE80, 0xF00, 0xF80, 0xFA0

# bytes not compared (pointer fields; FXSAVE's SSE part)
MASKED = (set(range(ENV32 + 12, ENV32 + 28)) | set(range(ENV16 + 6, ENV16 + 14))
          | set(range(SAVE32 + 12, SAVE32 + 28)) | set(range(SAVE16 + 6, SAVE16 + 14))
          | set(range(FXS + 6, FXS + 32)) | set(range(FXS + 160, FXS + 512)))
FPU_MASKED = set(range(12, 28))

CLASSES = gen_x87.classes()
REG_FORMS = [k for k in range(2048) if (k & 0xFF) >= 0xC0 and (CLASSES[k] & 0xF) == gen_x87.K_HOST
             and k != 0x3E3]                    # FNINIT: chosen on its own, rarely
MEM_FORMS = [(k >> 8, (k >> 3) & 7) for k in range(2048) if (k & 0xC7) == 0x07
             and (CLASSES[k] & 0xF) == gen_x87.K_HOST and k not in (0x12F,)]    # FLDCW: from the table


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------

def f80(rng: random.Random) -> bytes:
    sign = rng.getrandbits(1) << 15
    kind = rng.randrange(13)
    mant = rng.getrandbits(63)
    if kind == 0:
        e, m = 0, 0                                         # zero
    elif kind == 1:
        e, m = 0, mant or 1                                 # denormal
    elif kind == 2:
        e, m = 0, (1 << 63) | mant                          # pseudo-denormal
    elif kind == 3:
        e, m = rng.randrange(1, 0x7FFF), mant               # unnormal
    elif kind == 4:
        e, m = 0x7FFF, 1 << 63                              # infinity
    elif kind == 5:
        e, m = 0x7FFF, (3 << 62) | rng.getrandbits(62)      # quiet NaN
    elif kind == 6:
        e, m = 0x7FFF, (1 << 63) | (rng.getrandbits(62) or 1)   # signalling NaN
    elif kind == 7:
        e, m, sign = 0x7FFF, 3 << 62, 1 << 15              # indefinite
    elif kind == 8:
        e, m = 0x7FFF, rng.getrandbits(63)                  # pseudo-NaN / pseudo-infinity
    elif kind == 9:
        e, m = rng.choice((1, 2, 0x7FFE, 0x7FFD, 0x3FFF - 16446, 0x3FFF + 16383)) & 0x7FFF or 1, (1 << 63) | mant
    elif kind == 10:                                        # small integers and simple values
        v = rng.choice((1.0, 2.0, 0.5, 3.0, 10.0, 0.1, 1e10, 65535.0, 2.0 ** 31, 2.0 ** 63, 1.5, 2.5, -0.5))
        return f80_of_float(v * (-1 if sign else 1))
    else:
        e, m = 0x3FFF + rng.randrange(-70, 70), (1 << 63) | mant
    return struct.pack("<QH", m, sign | e)


def f80_of_float(v: float) -> bytes:
    bits = struct.unpack("<Q", struct.pack("<d", v))[0]
    sign = bits >> 63
    e = (bits >> 52) & 0x7FF
    frac = bits & ((1 << 52) - 1)
    if e == 0 and frac == 0:
        return struct.pack("<QH", 0, sign << 15)
    return struct.pack("<QH", (1 << 63) | (frac << 11), (sign << 15) | (e - 1023 + 16383))


def f64(rng: random.Random) -> bytes:
    k = rng.randrange(8)
    s = rng.getrandbits(1) << 63
    if k == 0:
        return struct.pack("<Q", s)
    if k == 1:
        return struct.pack("<Q", s | (rng.getrandbits(52) or 1))              # denormal
    if k == 2:
        return struct.pack("<Q", s | (0x7FF << 52))                          # infinity
    if k == 3:
        return struct.pack("<Q", s | (0x7FF << 52) | (1 << 51) | rng.getrandbits(51))     # QNaN
    if k == 4:
        return struct.pack("<Q", s | (0x7FF << 52) | (rng.getrandbits(51) or 1))          # SNaN
    if k == 5:
        return struct.pack("<d", rng.choice((1.0, -2.5, 3.0, 0.1, 1e300, 1e-300, 123456789.0)))
    return struct.pack("<Q", s | (rng.randrange(1, 0x7FF) << 52) | rng.getrandbits(52))


def f32(rng: random.Random) -> bytes:
    k = rng.randrange(7)
    s = rng.getrandbits(1) << 31
    if k == 0:
        return struct.pack("<I", s)
    if k == 1:
        return struct.pack("<I", s | (rng.getrandbits(23) or 1))
    if k == 2:
        return struct.pack("<I", s | (0xFF << 23))
    if k == 3:
        return struct.pack("<I", s | (0xFF << 23) | (1 << 22) | rng.getrandbits(22))
    if k == 4:
        return struct.pack("<I", s | (0xFF << 23) | (rng.getrandbits(22) or 1))
    return struct.pack("<I", s | (rng.randrange(1, 0xFF) << 23) | rng.getrandbits(23))


def integer(rng: random.Random, nbytes: int) -> bytes:
    bits = 8 * nbytes
    v = rng.choice((0, 1, -1, (1 << (bits - 1)) - 1, -(1 << (bits - 1)), rng.getrandbits(bits),
                    rng.randrange(-1000, 1000), rng.getrandbits(bits // 2)))
    return (v & ((1 << bits) - 1)).to_bytes(nbytes, "little")


def bcd(rng: random.Random) -> bytes:
    digits = [rng.randrange(10) for _ in range(18)]
    if rng.random() < 0.1:
        digits[rng.randrange(18)] = rng.randrange(10, 16)   # an invalid digit
    out = bytearray(10)
    for k in range(9):
        out[k] = digits[2 * k] | (digits[2 * k + 1] << 4)
    out[9] = rng.choice((0, 0x80))
    return bytes(out)


def control_word(rng: random.Random, unmasked_rate: float = 0.1) -> int:
    cw = (rng.choice((0, 2, 3, 3, 1)) << 8) | (rng.randrange(4) << 10) | (rng.getrandbits(1) << 12)
    if rng.random() < unmasked_rate:
        cw |= 0x3F & ~(1 << rng.randrange(6))                # one exception unmasked
    else:
        cw |= 0x3F
    return cw | 0x40


def full_tag(rng: random.Random) -> int:
    """Empty for about 30% of the registers; otherwise any tag, right for the contents or not
    (only empty / not empty is state: the stored tags are computed from the registers)."""
    tw = 0
    for k in range(8):
        tw |= (3 if rng.random() < 0.3 else rng.randrange(3)) << (2 * k)
    return tw


def status_word(rng: random.Random, cw: int) -> int:
    sw = (rng.randrange(8) << 11) | (rng.getrandbits(4) and (rng.getrandbits(1) << 8 | rng.getrandbits(1) << 9
                                                             | rng.getrandbits(1) << 10 | rng.getrandbits(1) << 14))
    sw |= rng.getrandbits(6) & cw & 0x3F                    # sticky flags, masked ones only
    return sw


def save_image(rng: random.Random, o16: bool = False) -> bytes:
    cw = control_word(rng, 0.02)
    sw = status_word(rng, cw)
    if o16:
        env = struct.pack("<7H", cw, sw, full_tag(rng), 0, 0, 0, 0)
    else:
        env = struct.pack("<7I", 0xFFFF0000 | cw, 0xFFFF0000 | sw, 0xFFFF0000 | full_tag(rng), 0, 0, 0, 0xFFFF0000)
    return env + b"".join(f80(rng) for _ in range(8))


def fx_image(rng: random.Random) -> bytes:
    cw = control_word(rng, 0.02)
    img = bytearray(512)
    struct.pack_into("<HHB", img, 0, cw, status_word(rng, cw), rng.getrandbits(8))
    struct.pack_into("<II", img, 24, 0x1F80, 0xFFFF)
    for k in range(8):
        img[32 + 16 * k:42 + 16 * k] = f80(rng)
    return bytes(img)


# ---------------------------------------------------------------------------
# Programs
# ---------------------------------------------------------------------------

@dataclass
class X87Program:
    seed: int
    code: bytes
    regs: dict
    data: bytes
    stack: bytes
    steps: list = field(default_factory=list)       # (offset in code, description)

    @property
    def end(self) -> int:
        return CODE + len(self.code)


def mem_insn(d: int, reg: int, off: int, o16: bool = False) -> bytes:
    return (b"\x66" if o16 else b"") + bytes((0xD8 + d, 0x80 | (reg << 3) | 6)) + struct.pack("<I", off)


def rand_off(rng: random.Random, ranges, size: int) -> int:
    lo, hi = rng.choice(ranges)
    if rng.random() < 0.7:
        return rng.randrange(lo, hi - size, 2 if size == 2 else 4 if size < 10 else 2)
    return rng.randrange(lo, hi - size)


def generate(seed: int) -> X87Program:
    rng = random.Random(seed ^ 0x87870000)
    data = bytearray(rng.randbytes(DATA_SIZE))
    # the operand pool: values of every format at slot starts
    for lo, hi in POOL:
        for off in range(lo, hi, 16):
            kind = rng.randrange(6)
            v = (f80(rng), f64(rng), f32(rng) + f32(rng), integer(rng, 8), bcd(rng), integer(rng, 4) + integer(rng, 2))[kind]
            data[off:off + len(v)] = v
    for k in range(32):
        struct.pack_into("<H", data, CW_TABLE + 2 * k, control_word(rng, 0.03))
    data[INIT_IMG:INIT_IMG + 108] = save_image(rng)
    data[RST_A:RST_A + 108] = save_image(rng)
    data[RST_B:RST_B + 108] = save_image(rng)
    data[RST16:RST16 + 94] = save_image(rng, o16=True)
    data[LDENV32:LDENV32 + 28] = save_image(rng)[:28]
    data[LDENV16:LDENV16 + 14] = save_image(rng, o16=True)[:14]
    data[FXR:FXR + 512] = fx_image(rng)

    code = bytearray()
    steps = []

    def emit(b: bytes, what: str):
        steps.append((len(code), what))
        code.extend(b)

    emit(b"\xbe" + struct.pack("<I", DATA), "mov esi, DATA")
    emit(mem_insn(5, 4, INIT_IMG), "frstor initial state")
    for _ in range(rng.randrange(40, 121)):
        r = rng.random()
        if r < 0.42:
            key = rng.choice(REG_FORMS)
            emit(bytes((0xD8 + (key >> 8), key & 0xFF)), "register form")
        elif r < 0.80:
            d, reg = rng.choice(MEM_FORMS)
            cls = CLASSES[(d << 8) | (reg << 3) | 7]
            size = cls >> gen_x87.SIZE_SHIFT
            ranges = STORE if cls & gen_x87.STORE else POOL + STORE
            emit(mem_insn(d, reg, rand_off(rng, ranges, size)), "memory form")
        elif r < 0.84:
            emit(mem_insn(1, 5, CW_TABLE + 2 * rng.randrange(32)), "fldcw")
        elif r < 0.87:
            emit(bytes((0xB4, rng.getrandbits(8), 0x9E)), "mov ah, imm8; sahf")
        elif r < 0.89:
            emit(b"\x9b", "fwait")
        elif r < 0.90:
            emit(b"\xdf\xe0", "fnstsw ax")
        else:
            k = rng.randrange(12)
            if k == 0:
                emit(mem_insn(1, 6, ENV32), "fnstenv")
            elif k == 1:
                emit(mem_insn(1, 6, ENV16, o16=True), "fnstenv 16")
            elif k == 2:
                emit(mem_insn(5, 6, SAVE32), "fnsave")
            elif k == 3:
                emit(mem_insn(5, 6, SAVE16, o16=True), "fnsave 16")
            elif k == 4:
                emit(b"\x0f\xae\x86" + struct.pack("<I", FXS), "fxsave")
            elif k == 5:
                emit(b"\x0f\xae\x8e" + struct.pack("<I", FXR), "fxrstor")
            elif k == 6:
                emit(mem_insn(5, 4, rng.choice((RST_A, RST_B))), "frstor")
            elif k == 7:
                emit(mem_insn(5, 4, RST16, o16=True), "frstor 16")
            elif k == 8:
                emit(mem_insn(1, 4, LDENV32), "fldenv")
            elif k == 9:
                emit(mem_insn(1, 4, LDENV16, o16=True), "fldenv 16")
            elif k == 10:
                emit(b"\xdb\xe2", "fnclex")
            else:
                emit(b"\xdb\xe3", "fninit")
    emit(b"\x90", "end")
    regs = {r: rng.getrandbits(32) for r in REG32}
    regs["esi"] = DATA
    regs["esp"] = STACK + 0x1000
    regs["eflags"] = 0x202 | (rng.getrandbits(12) & gen.ARITH)
    return X87Program(seed, bytes(code), regs, bytes(data), rng.randbytes(STACK_SIZE), steps)


# ---------------------------------------------------------------------------
# Running and comparing
# ---------------------------------------------------------------------------

@dataclass
class X87State:
    status: str
    eip: int
    regs: dict
    data: bytes
    stack: bytes
    fpu: bytes
    instructions: int = 0


def _native_input(programs, trace: bool = False) -> bytes:
    parts = [b"HDF1", struct.pack("<10I", MODE_X87 | (1 if trace else 0), len(programs), CODE, CODE_SIZE, DATA,
                                  DATA_SIZE, STACK, STACK_SIZE, harness.MAX_STEPS, 0)]
    for p in programs:
        parts.append(struct.pack("<I", len(p.code)))
        parts.append(p.code)
        parts.append(struct.pack("<9I", *(p.regs[r] for r in REG32), p.regs["eflags"]))
        parts.append(p.data)
        parts.append(p.stack)
    return b"".join(parts)


def _record(buf: bytes, off: int) -> X87State:
    h = _HEAD.unpack_from(buf, off)
    regs = dict(zip(REG32, h[2:10]))
    regs["eflags"] = h[10]
    d0 = off + _HEAD.size
    s0 = d0 + DATA_SIZE
    f0 = s0 + STACK_SIZE
    return X87State("end" if h[0] == 0 else harness._signame(h[0]), h[1], regs, buf[d0:s0], buf[s0:f0],
                    buf[f0:f0 + FPU_SIZE])


CLEAN_FX = bytes(struct.pack("<HHB", 0x037F, 0, 0)) + bytes(19) + struct.pack("<I", 0x1F80) + bytes(132)

_vm: dict = {"m": None}


def _machine():
    import vmcore

    if _vm["m"] is None:
        m = vmcore.Machine(memory_mb=harness.MEMORY_MB, mode="bare")
        m.reg_write("cr0", m.reg_read("cr0") | 0x20)        # CR0.NE: unmasked exceptions are #MF
        _vm["m"] = m
    return _vm["m"]


def vm_setup(m, p: X87Program) -> None:
    m.mem_write(CODE, p.code + b"\xf4")
    m.mem_write(DATA, p.data)
    m.mem_write(STACK, p.stack)
    for r in REG32:
        m.reg_write(r, p.regs[r])
    m.reg_write("eflags", p.regs["eflags"])
    m.reg_write("eip", CODE)
    m._engine.fpu_fxrstor(CLEAN_FX)


def vm_state(m, p: X87Program, r=None) -> X87State:
    import vmcore

    regs = {n: m.reg_read(n) for n in REG32}
    regs["eflags"] = m.reg_read("eflags")
    eip = m.reg_read("eip")
    status, n = "running", 0
    if r is not None:
        n = r.instructions
        if r.exit is vmcore.Exit.HLT and eip == p.end + 1:
            status, eip, n = "end", p.end, n - 1
        elif r.exit is vmcore.Exit.SHUTDOWN and r.exception:
            status, eip = f"#{r.exception[0]}", r.exception[2]
        elif r.exit is not vmcore.Exit.BUDGET:
            status = f"{r.exit.name}: {r.reason}"
    return X87State(status, eip, regs, m.mem_read(DATA, DATA_SIZE), m.mem_read(STACK, STACK_SIZE),
                    m._engine.fpu_fnsave(), n)


def run_vmcore(p: X87Program) -> X87State:
    import vmcore

    m = _machine()
    vm_setup(m, p)
    r = m.run(count=harness.VM_BUDGET)
    s = vm_state(m, p, r)
    if r.exit is vmcore.Exit.SHUTDOWN and s.status == "#16":
        # the #MF found no IDT: the CPU state is reset for the next program (a new Machine costs more
        # than the programs)
        m._engine.reset_flat32()
        m.reg_write("cr0", m.reg_read("cr0") | 0x20)
    elif r.exit is not vmcore.Exit.HLT:
        _vm["m"] = None
    return s


def run_native(programs, trace: bool = False):
    runner = harness.build_runner()
    proc = subprocess.run([str(runner)], input=_native_input(programs, trace), capture_output=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"native runner failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")
    out, off, res = proc.stdout, 0, []
    for _ in programs:
        if trace:
            (n,) = struct.unpack_from("<I", out, off)
            off += 4
            steps = [_record(out, off + k * _REC) for k in range(n)]
            off += n * _REC
            res.append((steps, _record(out, off)))
        else:
            res.append(_record(out, off))
        off += _REC
    return res


_EQUIV = dict(harness._EQUIV)
_EQUIV["SIGFPE"] = {"#0", "#16"}


def _ranges(masked):
    out, start, prev = [], None, None
    for k in sorted(masked):
        if start is None:
            start = prev = k
        elif k == prev + 1:
            prev = k
        else:
            out.append((start, prev + 1))
            start = prev = k
    if start is not None:
        out.append((start, prev + 1))
    return out


_RANGES = {}


def _blank(a: bytes, masked) -> bytes:
    key = id(masked)
    if key not in _RANGES:
        _RANGES[key] = _ranges(masked)
    b = bytearray(a)
    for lo, hi in _RANGES[key]:
        b[lo:hi] = bytes(hi - lo)
    return bytes(b)


def _masked_diff(name, base, a, b, masked):
    if a == b or (masked and _blank(a, masked) == _blank(b, masked)):
        return []
    diff = [i for i in range(len(a)) if a[i] != b[i] and i not in masked]
    if not diff:
        return []
    shown = ", ".join(f"{base + i:#x}: {a[i]:02x} vs {b[i]:02x}" for i in diff[:8])
    return [f"{name} differs at {len(diff)} byte(s): {shown}"]


def fpu_text(img: bytes) -> str:
    cw, sw, tw = (struct.unpack_from("<H", img, k)[0] for k in (0, 4, 8))
    regs = " ".join(img[28 + 10 * k:38 + 10 * k][::-1].hex() for k in range(8))
    return f"cw={cw:04x} sw={sw:04x} tw={tw:04x} st0..7={regs}"


def differences(vm: X87State, host: X87State) -> list:
    out = []
    if vm.status != host.status and vm.status not in _EQUIV.get(host.status, ()):
        out.append(f"stopped by {vm.status} (vmcore) vs {host.status} (host)")
    if vm.eip != host.eip:
        out.append(f"eip {vm.eip:#010x} vs {host.eip:#010x}")
    for n in REG32:
        if vm.regs[n] != host.regs[n]:
            out.append(f"{n} {vm.regs[n]:#010x} vs {host.regs[n]:#010x}")
    mask = gen.ARITH | gen.DF
    if (vm.regs["eflags"] ^ host.regs["eflags"]) & mask:
        out.append(f"eflags {vm.regs['eflags']:#x} vs {host.regs['eflags']:#x}")
    out += _masked_diff("data page", DATA, vm.data, host.data, MASKED)
    out += _masked_diff("stack page", STACK, vm.stack, host.stack, set())
    fd = _masked_diff("FPU state", 0, vm.fpu, host.fpu, FPU_MASKED)
    if fd:
        out += fd + [f"  vmcore: {fpu_text(vm.fpu)}", f"  host:   {fpu_text(host.fpu)}"]
    return out


def listing(p: X87Program, mark: int | None = None) -> str:
    import capstone

    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    lines = []
    for insn in md.disasm(p.code, CODE):
        tag = ">>" if insn.address == mark else "  "
        lines.append(f"{tag} {insn.address:08x}  {insn.bytes.hex(' '):<24} {insn.mnemonic} {insn.op_str}")
    return "\n".join(lines)


def first_divergence(p: X87Program):
    """Single-step both (vmcore with run(count=1), the host with EFLAGS.TF); the first step after
    which they differ, as (eip before, differences), or None."""
    import vmcore

    _vm["m"] = None
    m = _machine()
    vm_setup(m, p)
    vms = [vm_state(m, p)]
    while vms[-1].eip != p.end and len(vms) < harness.MAX_STEPS:
        r = m.run(count=1)
        s = vm_state(m, p, r)
        vms.append(s)
        if r.exit is not vmcore.Exit.BUDGET:
            break
    _vm["m"] = None
    steps, final = run_native([p], trace=True)[0]
    hosts = steps + ([final] if final.status != "end" else [])
    for k in range(1, min(len(vms), len(hosts))):
        d = [x for x in differences(vms[k], hosts[k]) if not x.startswith("stopped by")]
        if d:
            return vms[k - 1].eip, d
    return None


def report(p: X87Program, vm: X87State, host: X87State) -> str:
    out = [f"x87 seed {p.seed}: vmcore and the host CPU differ ({vm.instructions} instructions run by vmcore)",
           "  " + "\n  ".join(differences(vm, host))]
    mark = None
    try:
        found = first_divergence(p)
    except Exception as e:          # the diagnosis must not hide the mismatch
        found = None
        out.append(f"(single-step diagnosis failed: {type(e).__name__}: {e})")
    if found:
        mark = found[0]
        out.append(f"first divergence after the instruction at {mark:#010x}:\n  " + "\n  ".join(found[1]))
    out.append("program:\n" + listing(p, mark))
    return "\n".join(out)


@dataclass
class Result:
    programs: int = 0
    executed: int = 0
    faulted: int = 0
    failures: list = field(default_factory=list)
    seconds: float = 0.0


def campaign(first_seed: int, target_insns: int, batch: int = 300, max_failures: int = 3,
             time_limit: float | None = None) -> Result:
    res = Result()
    t0 = time.perf_counter()
    seed = first_seed
    runner = harness.build_runner()
    while res.executed < target_insns and len(res.failures) < max_failures:
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
        progs = [generate(s) for s in range(seed, seed + batch)]
        seed += batch
        with tempfile.TemporaryFile() as inp:
            inp.write(_native_input(progs))
            inp.seek(0)
            proc = subprocess.Popen([str(runner)], stdin=inp, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                vms = [run_vmcore(p) for p in progs]
                out, err = proc.communicate(timeout=600)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if proc.returncode != 0 or len(out) != len(progs) * _REC:
            raise RuntimeError(f"native runner failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
        for i, (p, vm) in enumerate(zip(progs, vms)):
            host = _record(out, i * _REC)
            res.programs += 1
            res.executed += vm.instructions
            res.faulted += host.status != "end"
            if differences(vm, host):
                if len(res.failures) < max_failures:
                    res.failures.append(report(p, vm, host))
                else:
                    break
    res.seconds = time.perf_counter() - t0
    return res
