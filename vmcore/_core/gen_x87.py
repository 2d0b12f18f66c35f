"""Generates x87_ops.h: one tiny host function per x87 instruction form, and the tables the
decoder classifies the escape opcodes (D8-DF) by. setup.py runs it before cythonize.

The engine runs x87 arithmetic on the host's own FPU with the guest's state loaded
(x87_host.h, X87_RUN): each function carries the instruction's exact encoding as `.byte`s,
written here, never copied from the guest. Register forms keep their ModRM byte; memory
forms are re-encoded with ModRM mod=00 rm=111, i.e. [rdi], the engine's operand buffer
(ops_x87.pxi reads and writes the guest operand through the MMU itself).

Classification follows the opcode maps of SDM Vol. 2 Appendix A.5 (Tables A-7 to A-22) as
a P6 decodes them: the reserved encodings are #UD; the undocumented aliases a P6 executes
(FSTP1 D9 D8+i, FCOM2 DC D0+i, FCOMP3 DC D8+i, FXCH4 DD C8+i, FCOMP5 DE D0+i, FFREEP DF C0+i,
FXCH7 DF C8+i, FSTP8 DF D0+i, FSTP9 DF D8+i) run as what they alias; FISTTP (SSE3) is #UD.
A key is the 11-bit opcode FOP = (first byte & 7) << 8 | ModRM; a memory form's key has
mod=00 rm=111 (reg kept), so one key names every addressing form of it.
"""
import pathlib
import sys

# class bits (x87_host.h mirrors them; ops_x87.pxi uses them)
K_UD, K_HOST, K_FNSTSW_AX, K_FLDENV, K_FNSTENV, K_FRSTOR, K_FNSAVE = range(7)
WAIT = 0x10         # a waiting instruction: a pending unmasked exception is taken first
CTL = 0x20          # a control instruction: FIP/FCS/FOP/FDP/FDS unchanged (SDM Vol. 1 §8.1.8)
FL_IN = 0x40        # reads EFLAGS (FCMOVcc)
FL_OUT = 0x80       # writes EFLAGS (FCOMI, FUCOMI and their P forms)
INIT = 0x100        # FNINIT: the pointers are cleared too
STORE = 0x200       # the memory operand is written (else read)
SIZE_SHIFT = 12     # memory operand size in bytes, bits 12-15 (0: no memory operand)

HOST = K_HOST | WAIT


def reg_class(d, modrm):
    """Class of the register form (mod = 3) d8+d modrm."""
    reg, rm = (modrm >> 3) & 7, modrm & 7
    if d in (0, 4):
        return HOST                                  # arithmetic, compares (DC D0-DF: aliases)
    if d == 1:
        if reg in (0, 1, 3):
            return HOST                              # FLD, FXCH, FSTP1
        if reg == 2:
            return HOST if rm == 0 else K_UD         # FNOP
        if reg == 4:
            return HOST if rm in (0, 1, 4, 5) else K_UD     # FCHS FABS FTST FXAM
        if reg == 5:
            return HOST if rm != 7 else K_UD         # FLD1 ... FLDZ
        return HOST                                  # F2XM1 ... FCOS
    if d == 2:
        if reg < 4:
            return HOST | FL_IN                      # FCMOVB FCMOVE FCMOVBE FCMOVU
        return HOST if modrm == 0xE9 else K_UD       # FUCOMPP
    if d == 3:
        if reg < 4:
            return HOST | FL_IN                      # FCMOVNB ...
        if reg == 4:
            if rm in (0, 1, 4):
                return K_HOST | CTL                  # FNENI FNDISI FNSETPM: no-ops since the 387
            if rm == 2:
                return K_HOST | CTL                  # FNCLEX
            if rm == 3:
                return K_HOST | CTL | INIT           # FNINIT
            return K_UD
        if reg in (5, 6):
            return HOST | FL_OUT                     # FUCOMI FCOMI
        return K_UD
    if d == 5:
        return HOST if reg < 6 else K_UD             # FFREE FXCH4 FST FSTP FUCOM FUCOMP
    if d == 6:
        if reg == 3:
            return HOST if rm == 1 else K_UD         # FCOMPP
        return HOST                                  # FADDP FMULP FCOMP5 FSUBRP FSUBP FDIVRP FDIVP
    # d == 7
    if reg < 4:
        return HOST                                  # FFREEP FXCH7 FSTP8 FSTP9
    if reg == 4:
        return K_FNSTSW_AX | CTL if rm == 0 else K_UD
    if reg in (5, 6):
        return HOST | FL_OUT                         # FUCOMIP FCOMIP
    return K_UD


def rd(size):
    return HOST | (size << SIZE_SHIFT)


def wr(size):
    return HOST | STORE | (size << SIZE_SHIFT)


# memory forms by [d][reg]
MEM = [
    [rd(4)] * 8,                                                            # D8: m32fp arithmetic
    [rd(4), K_UD, wr(4), wr(4), K_FLDENV | WAIT | CTL, rd(2) | CTL,         # D9: FLD FST FSTP FLDENV FLDCW
     K_FNSTENV | CTL, K_HOST | CTL | STORE | (2 << SIZE_SHIFT)],            #     FNSTENV FNSTCW
    [rd(4)] * 8,                                                            # DA: m32int arithmetic
    [rd(4), K_UD, wr(4), wr(4), K_UD, rd(10), K_UD, wr(10)],                # DB: FILD FIST FISTP FLD/FSTP m80
    [rd(8)] * 8,                                                            # DC: m64fp arithmetic
    [rd(8), K_UD, wr(8), wr(8), K_FRSTOR | WAIT | CTL, K_UD,                # DD: FLD FST FSTP FRSTOR
     K_FNSAVE | CTL, K_HOST | CTL | STORE | (2 << SIZE_SHIFT)],             #     FNSAVE FNSTSW
    [rd(2)] * 8,                                                            # DE: m16int arithmetic
    [rd(2), K_UD, wr(2), wr(2), rd(10), rd(8), wr(10), wr(8)],              # DF: FILD FIST FISTP FBLD FILD FBSTP FISTP
]


def classes():
    table = [K_UD] * 2048
    for d in range(8):
        for modrm in range(0xC0, 0x100):
            table[(d << 8) | modrm] = reg_class(d, modrm)
        for reg in range(8):
            table[(d << 8) | (reg << 3) | 7] = MEM[d][reg]
    return table


def main(dest):
    table = classes()
    out = ["/* GENERATED by gen_x87.py -- do not edit. */",
           "#ifndef VMCORE_X87_OPS_H", "#define VMCORE_X87_OPS_H", '#include "x87_host.h"', ""]
    names = {}
    for key, cls in enumerate(table):
        if (cls & 0xF) != K_HOST:
            continue
        d, modrm = key >> 8, key & 0xFF
        name = f"x87h_{key:03x}"
        names[key] = name
        out.append(f"static void {name}(x87_image_t* g, uint8_t* m, uint64_t* fl) "
                   f"{{ X87_RUN(\"0x{0xD8 + d:02x},0x{modrm:02x}\"); }}")
    out.append("")
    out.append("static const x87_host_fn x87_host_table[2048] = {")
    out.extend(f"    [0x{k:03x}] = {n}," for k, n in names.items())
    out.append("};")
    out.append("")
    out.append("static const uint16_t x87_class_table[2048] = {")
    for base in range(0, 2048, 16):
        out.append("    " + " ".join(f"0x{v:04x}," for v in table[base:base + 16]))
    out.append("};")
    out.append("#endif")
    text = "\n".join(out) + "\n"
    path = pathlib.Path(dest)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).with_name("x87_ops.h"))
