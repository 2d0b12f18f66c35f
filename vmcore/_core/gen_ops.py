"""Generates ops_generated.pxi: the handlers that differ only in operation,
operand size and register-versus-memory form, and the tables the decoder
picks them from. setup.py runs it before cythonize.

Each family below is a template plus the list of its members; a handler is
named by its Intel operand form (ADD_EvGv_m: ADD Ev,Gv with a memory Ev; _r with a
register Ev; _f with a memory Ev in a flat segment, which the decode mode guarantees).
"""
import pathlib
import sys

SIZES = [(0, "b", "8"), (1, "w", "16"), (2, "d", "32")]
ALU_OPS = ["ADD", "OR", "ADC", "SBB", "AND", "SUB", "XOR", "CMP", "TEST"]
COND = ["O", "NO", "B", "AE", "Z", "NZ", "BE", "A", "S", "NS", "P", "NP", "L", "GE", "LE", "G"]
SHIFT_OPS = ["ROL", "ROR", "RCL", "RCR", "SHL", "SHR", "SAL", "SAR"]
UNARY = ["INC", "DEC", "NOT", "NEG"]

HDR = "cdef int {name}(Cpu* c, Insn* i) noexcept nogil:\n"


SZI = {"8": 0, "16": 1, "32": 2}


FORMS = ("m", "r", "f")      # memory (segment checked), register, memory in a flat segment
LAST_OFFSET = {"8": "0xFFFFFFFFU", "16": "0xFFFFFFFEU", "32": "0xFFFFFFFCU"}


def mem_addr(sz, write=False, flat=False):
    """Linear address of the memory operand into `la`: through the segment checks, or for
    a flat segment (base 0, 4 GiB, readable and writable: the decode mode says so) only the
    check that the access does not run past 4 GiB."""
    if flat:
        return (f"    cdef uint32_t la = ea_of(c, i)\n    if la > {LAST_OFFSET[sz]}:\n"
                f"        return seg_fault(c, i.seg)\n")
    check = "seg_addr_w" if write else "seg_addr"
    return f"    cdef uint32_t la\n    if {check}(c, i, {SZI[sz]}, &la):\n        return RC_FAULT\n"


def load_e(form, sz, dst="a", write=False):
    if form in ("m", "f"):
        return (mem_addr(sz, write, form == "f") + f"    cdef uint32_t {dst}\n    cdef CcSave saved\n"
                f"    if rd{sz}(c, la, &{dst}):\n        return RC_FAULT\n    save_cc(c, &saved)\n")
    return f"    cdef uint32_t {dst} = getr{sz}(c, i.rm)\n"


def store_e(form, sz, val):
    if form in ("m", "f"):
        # a faulting write leaves the flags as they were: the instruction never happened
        return (f"    if wr{sz}(c, la, {val}):\n        restore_cc(c, &saved)\n        return RC_FAULT\n"
                "    return RC_NEXT\n")
    return f"    setr{sz}(c, i.rm, {val})\n    return RC_NEXT\n"


def gen_alu(out, tables):
    # ALU_H[op][size][form]: form 0 E,G(m) 1 E,G(r) 2 G,E(m) 3 G,E(r) 4 E,I(m) 5 E,I(r)
    rows = []
    for op_index, op in enumerate(ALU_OPS):
        core_op = 4 if op == "TEST" else op_index
        writes = op not in ("CMP", "TEST")
        srow = []
        for szi, s, bits in SIZES:
            frow = []
            for form in FORMS:
                name = f"h_{op}_E{s}G{s}_{form}"
                body = load_e(form, bits, write=writes)
                body += f"    cdef uint32_t r = alu(c, {core_op}, {szi}, a, getr{bits}(c, i.reg))\n"
                body += store_e(form, bits, "r") if writes else "    return RC_NEXT\n"
                out.append(HDR.format(name=name) + body)
                frow.append(name)
            for form in FORMS:
                name = f"h_{op}_G{s}E{s}_{form}"
                body = load_e(form, bits, "b")
                body += f"    cdef uint32_t r = alu(c, {core_op}, {szi}, getr{bits}(c, i.reg), b)\n"
                body += f"    setr{bits}(c, i.reg, r)\n" if writes else ""
                body += "    return RC_NEXT\n"
                out.append(HDR.format(name=name) + body)
                frow.append(name)
            for form in FORMS:
                name = f"h_{op}_E{s}I{s}_{form}"
                body = load_e(form, bits, write=writes)
                body += f"    cdef uint32_t r = alu(c, {core_op}, {szi}, a, i.imm)\n"
                body += store_e(form, bits, "r") if writes else "    return RC_NEXT\n"
                out.append(HDR.format(name=name) + body)
                frow.append(name)
            srow.append(frow)
        rows.append(srow)
    tables.append(("ALU_H", [len(ALU_OPS), 3, 9], rows))


def gen_unary(out, tables):
    rows = []
    for op_index, op in enumerate(UNARY):
        srow = []
        for szi, s, bits in SIZES:
            frow = []
            for form in FORMS:
                name = f"h_{op}_E{s}_{form}"
                body = load_e(form, bits, write=True)
                if op in ("INC", "DEC"):
                    body += f"    cdef uint32_t r = inc_dec(c, {op_index}, {szi}, a)\n"
                elif op == "NOT":
                    body += f"    cdef uint32_t r = ~a & <uint32_t>{(1 << int(bits)) - 1:#x}U\n"
                else:
                    body += f"    cdef uint32_t r = alu(c, 5, {szi}, 0, a)\n"
                body += store_e(form, bits, "r")
                out.append(HDR.format(name=name) + body)
                frow.append(name)
            srow.append(frow)
        rows.append(srow)
    tables.append(("UNARY_H", [len(UNARY), 3, 3], rows))


def gen_shift(out, tables):
    # SHIFT_H[op][size][count: 0 imm/1, 1 CL][form]
    rows = []
    for op_index, op in enumerate(SHIFT_OPS):
        srow = []
        for szi, s, bits in SIZES:
            crow = []
            for cnt in ("I", "CL"):
                frow = []
                for form in FORMS:
                    name = f"h_{op}_E{s}_{cnt}_{form}"
                    count = "i.imm" if cnt == "I" else "getr8(c, R_ECX)"
                    body = f"    cdef uint32_t n = {count} & 31\n"
                    body += load_e(form, bits, write=True)
                    body += "    if n == 0:\n        return RC_NEXT\n"
                    body += f"    cdef uint32_t r = shift(c, {op_index}, {szi}, a, n)\n"
                    body += store_e(form, bits, "r")
                    out.append(HDR.format(name=name) + body)
                    frow.append(name)
                crow.append(frow)
            srow.append(crow)
        rows.append(srow)
    tables.append(("SHIFT_H", [len(SHIFT_OPS), 3, 2, 3], rows))


def gen_cond(out, tables):
    jcc = []
    setcc = []
    cmov = []
    for cc, name in enumerate(COND):
        h = f"h_J{name}"
        out.append(HDR.format(name=h)
                   + f"    c.eip = i.disp if cond_true(c, {cc}) else i.next_eip\n    return RC_BRANCH\n")
        jcc.append(h)
        row = []
        for form in FORMS:
            h = f"h_SET{name}_Eb_{form}"
            body = f"    cdef uint32_t r = cond_true(c, {cc})\n"
            if form != "r":
                body += mem_addr("8", write=True, flat=form == "f") + "    return wr8(c, la, r)\n"
            else:
                body += "    setr8(c, i.rm, r)\n    return RC_NEXT\n"
            out.append(HDR.format(name=h) + body)
            row.append(h)
        setcc.append(row)
        srow = []
        for szi, s, bits in SIZES[1:]:
            frow = []
            for form in FORMS:
                h = f"h_CMOV{name}_G{s}E{s}_{form}"
                # the source is read (and may fault) whether or not the move happens (SDM CMOVcc)
                body = load_e(form, bits, "b")
                body += f"    if cond_true(c, {cc}):\n        setr{bits}(c, i.reg, b)\n"
                body += "    return RC_NEXT\n"
                out.append(HDR.format(name=h) + body)
                frow.append(h)
            srow.append(frow)
        cmov.append(srow)
    tables.append(("JCC_H", [16], jcc))
    tables.append(("SETCC_H", [16, 3], setcc))
    tables.append(("CMOV_H", [16, 2, 3], cmov))


def gen_mov(out, tables):
    eg, ge, ei = [], [], []
    for szi, s, bits in SIZES:
        row = []
        for form in FORMS:
            h = f"h_MOV_E{s}G{s}_{form}"
            out.append(HDR.format(name=h)
                       + (mem_addr(bits, True, form == "f") + f"    return wr{bits}(c, la, getr{bits}(c, i.reg))\n"
                          if form != "r"
                          else f"    setr{bits}(c, i.rm, getr{bits}(c, i.reg))\n    return RC_NEXT\n"))
            row.append(h)
        eg.append(row)
        row = []
        for form in FORMS:
            h = f"h_MOV_G{s}E{s}_{form}"
            out.append(HDR.format(name=h) + load_e(form, bits, "b")
                       + f"    setr{bits}(c, i.reg, b)\n    return RC_NEXT\n")
            row.append(h)
        ge.append(row)
        row = []
        for form in FORMS:
            h = f"h_MOV_E{s}I{s}_{form}"
            out.append(HDR.format(name=h)
                       + (mem_addr(bits, True, form == "f") + f"    return wr{bits}(c, la, i.imm)\n" if form != "r"
                          else f"    setr{bits}(c, i.rm, i.imm)\n    return RC_NEXT\n"))
            row.append(h)
        ei.append(row)
    tables.append(("MOV_EG_H", [3, 3], eg))
    tables.append(("MOV_GE_H", [3, 3], ge))
    tables.append(("MOV_EI_H", [3, 3], ei))


def emit_tables(out, tables):
    for name, dims, rows in tables:
        out.append(f"cdef handler_t {name}" + "".join(f"[{d}]" for d in dims))

    def walk(name, idx, node):
        if isinstance(node, str):
            out.append(f"{name}{''.join(f'[{k}]' for k in idx)} = {node}")
        else:
            for k, sub in enumerate(node):
                walk(name, idx + [k], sub)

    out.append("cdef void init_generated_tables() noexcept nogil:")
    for name, dims, rows in tables:
        start = len(out)
        walk(name, [], rows)
        for k in range(start, len(out)):
            out[k] = "    " + out[k]


def main(dest):
    out = ["# GENERATED by gen_ops.py -- do not edit.\n"]
    tables = []
    gen_alu(out, tables)
    gen_unary(out, tables)
    gen_shift(out, tables)
    gen_cond(out, tables)
    gen_mov(out, tables)
    emit_tables(out, tables)
    text = "\n".join(out) + "\n"
    path = pathlib.Path(dest)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).with_name("ops_generated.pxi"))
