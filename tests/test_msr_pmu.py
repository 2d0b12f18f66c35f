"""The MSRs and the instruction Linux's CPU setup and perf core use on a P6 (SDM Vol. 4, Vol. 3
§20.6.8, Vol. 2 RDPMC): IA32_BIOS_SIGN_ID (0x8B, the microcode revision), the two performance
counters (0xC1, 0xC2: 40 bits, a write sign-extends bit 31) and their event selects (0x186,
0x187), RDPMC, CR4.PCE. The counters keep what is written; they count no events."""
import pytest

from vmcore import Exit, Machine


def run(code: bytes, mode="bare"):
    m = Machine(memory_mb=4, mode=mode)
    m.mem_write(0x10000, code + b"\xf4")
    m.reg_write("eip", 0x10000)
    r = m.run(count=1000)
    return m, r


def mov(reg: str, value: int) -> bytes:
    return bytes([0xB8 + ("eax", "ecx", "edx", "ebx").index(reg)]) + value.to_bytes(4, "little")


@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_microcode_revision_msr(mode):
    # wrmsr 0x8b <- 0 ; cpuid(1) ; rdmsr 0x8b: EDX = revision 0
    m, r = run(mov("ecx", 0x8B) + mov("eax", 0) + mov("edx", 0) + b"\x0f\x30"
               + mov("eax", 1) + b"\x0f\xa2" + mov("ecx", 0x8B) + mov("edx", 0x1234) + b"\x0f\x32", mode)
    assert r.exit is Exit.HLT and m.reg_read("edx") == 0 and m.reg_read("eax") == 0


@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_perf_counters_keep_what_is_written_and_rdpmc_reads_them(mode):
    code = (mov("ecx", 0xC1) + mov("eax", 0xABCD) + mov("edx", 0) + b"\x0f\x30"          # PerfCtr0 = 0xabcd
            + mov("ecx", 0xC2) + mov("eax", 0x80000001) + b"\x0f\x30"                    # PerfCtr1: sign-extended
            + mov("ecx", 0x187) + mov("eax", 0x430079) + b"\x0f\x30"                     # PerfEvtSel1
            + mov("ecx", 1) + b"\x0f\x33" + b"\x89\xc3" + b"\x89\xd6"                    # rdpmc 1 -> ebx, esi
            + mov("ecx", 0x187) + b"\x0f\x32" + b"\x89\xc7"                              # rdmsr -> edi
            + mov("ecx", 0xC1) + b"\x0f\x32")                                            # rdmsr PerfCtr0
    m, r = run(code, mode)
    assert r.exit is Exit.HLT, r.reason
    assert (m.reg_read("ebx"), m.reg_read("esi")) == (0x80000001, 0xFF)
    assert m.reg_read("edi") == 0x430079
    assert (m.reg_read("eax"), m.reg_read("edx")) == (0xABCD, 0)


def test_rdpmc_of_a_counter_the_cpu_lacks_is_gp():
    m, r = run(mov("ecx", 2) + b"\x0f\x33")
    assert r.exit is Exit.SHUTDOWN and r.exception[0] == 13


def test_cr4_pce_is_writable():
    m, r = run(mov("eax", 0x100) + b"\x0f\x22\xe0" + b"\x0f\x20\xe3")          # mov cr4, eax ; mov ebx, cr4
    assert r.exit is Exit.HLT and m.reg_read("ebx") == 0x100


@pytest.mark.parametrize("mode", ["bare", "bt"])
@pytest.mark.parametrize("insn", [b"\x0f\x32", b"\x0f\x30"], ids=["rdmsr", "wrmsr"])
def test_an_msr_the_cpu_model_lacks_is_gp_and_counted(mode, insn):
    # mov ecx, 0x3a (IA32_FEATURE_CONTROL: from Core 2 on, not on a P6) ; rdmsr/wrmsr -> #GP(0)
    m, r = run(mov("ecx", 0x3A) + insn, mode)
    assert r.exit is Exit.SHUTDOWN and r.exception[0] == 13      # no IDT: #GP, #DF, triple fault
    assert m.stats["msr_unknown"] == 1
    m, r = run(mov("ecx", 0x8B) + b"\x0f\x32", mode)               # one the model has
    assert r.exit is Exit.HLT and m.stats["msr_unknown"] == 0
