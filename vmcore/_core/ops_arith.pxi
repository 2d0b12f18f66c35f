# Arithmetic families that are not table-generated: shifts' core, multiply and
# divide, sign extension, BCD adjust, exchange-and-add/compare, double shifts,
# bit test and scan, byte swap.

cdef inline int opsz(Insn* i) noexcept nogil:
    """Size index of a v-sized operand: 1 (16-bit) or 2 (32-bit)."""
    return 1 if i.flags & IF_O16 else 2

cdef inline int load_E(Cpu* c, Insn* i, int sz, uint32_t* v, uint32_t* la) noexcept nogil:
    if i.flags & IF_MEM:
        if seg_addr(c, i, sz, la):
            return RC_FAULT
        return rd_sz(c, la[0], sz, v)
    v[0] = getr_sz(c, i.rm, sz)
    return 0

cdef inline int load_E_w(Cpu* c, Insn* i, int sz, uint32_t* v, uint32_t* la) noexcept nogil:
    """load_E for an operand that will be written back: a memory one must be writable."""
    if i.flags & IF_MEM:
        if seg_addr_w(c, i, sz, la):
            return RC_FAULT
        return rd_sz(c, la[0], sz, v)
    v[0] = getr_sz(c, i.rm, sz)
    return 0

cdef inline int store_E(Cpu* c, Insn* i, int sz, uint32_t v, uint32_t la) noexcept nogil:
    if i.flags & IF_MEM:
        return wr_sz(c, la, sz, v)
    setr_sz(c, i.rm, sz, v)
    return 0

cdef inline int fault(Cpu* c, int vector) noexcept nogil:
    c.exc_vector = vector
    c.exc_has_err = 0
    c.exc_err = 0
    return RC_FAULT

cdef inline int fault_err(Cpu* c, int vector, uint32_t err) noexcept nogil:
    c.exc_vector = vector
    c.exc_has_err = 1
    c.exc_err = err
    return RC_FAULT

# --- shifts and rotates (SDM Vol. 2 "RCL/RCR/ROL/ROR", "SAL/SAR/SHL/SHR") ---

cdef uint32_t shift(Cpu* c, int op, int sz, uint32_t a, uint32_t n) noexcept nogil:
    """n = count & 1Fh, nonzero. op: 0 ROL 1 ROR 2 RCL 3 RCR 4 SHL 5 SHR 6 SAL 7 SAR."""
    cdef uint32_t bits = 8 << sz
    cdef uint32_t m = SIZE_MASK[sz]
    cdef uint32_t sign = SIZE_SIGN[sz]
    cdef uint32_t r, cf, of, f, k, t
    cdef int64_t sa
    a &= m
    if op >= 4:
        if op == 5:
            r = <uint32_t>((<uint64_t>a) >> n)
            cf = <uint32_t>((<uint64_t>a) >> (n - 1)) & 1
            # OF is the sign change of the last one-bit step: MSB(a) for a count of 1, else 0
            of = FL_OF if (n == 1 and (a & sign)) else 0
        elif op == 7:
            sa = <int64_t>(<int32_t>(a << (32 - bits)) >> (32 - bits))
            r = <uint32_t>(sa >> n) & m
            cf = <uint32_t>(sa >> (n - 1)) & 1
            of = 0
        else:   # SHL == SAL
            r = <uint32_t>(((<uint64_t>a) << n) & m)
            cf = <uint32_t>(((<uint64_t>a) << n) >> bits) & 1
            of = FL_OF if (((r & sign) != 0) != (cf != 0)) else 0
        set_res_flags(c, sz, r, cf | of)
        return r
    f = compute_flags(c)
    if op == 0 or op == 1:
        k = n % bits
        if op == 0:
            r = ((a << k) | (a >> ((bits - k) % bits))) & m if k else a
            cf = r & 1
            of = FL_OF if (((r & sign) != 0) != (cf != 0)) else 0
        else:
            r = ((a >> k) | (a << ((bits - k) % bits))) & m if k else a
            cf = 1 if r & sign else 0
            of = FL_OF if (((r & sign) != 0) != ((r & (sign >> 1)) != 0)) else 0
        set_arith_flags(c, (f & ~<uint32_t>(FL_CF | FL_OF)) | cf | of)
        return r
    # RCL / RCR rotate through CF: a (bits + 1)-bit rotation
    k = n % (bits + 1)
    cf = f & FL_CF
    r = a
    for t in range(k):
        if op == 2:
            of = (r >> (bits - 1)) & 1
            r = ((r << 1) | cf) & m
            cf = of
        else:
            of = r & 1
            r = (r >> 1) | (cf << (bits - 1))
            cf = of
    if op == 2:
        of = FL_OF if (((r & sign) != 0) != (cf != 0)) else 0
    else:
        of = FL_OF if (((r & sign) != 0) != ((r & (sign >> 1)) != 0)) else 0
    set_arith_flags(c, (f & ~<uint32_t>(FL_CF | FL_OF)) | cf | of)
    return r

cdef int h_SHxD(Cpu* c, Insn* i) noexcept nogil:
    """0F A4/A5 SHLD, 0F AC/AD SHRD Ev,Gv,Ib|CL. op bit 0: SHRD; bit 1: count in CL.
    Counts above the operand size are undefined (SDM SHLD/SHRD); the 16-bit form
    shifts through the 32-bit pair here."""
    cdef int sz = opsz(i)
    cdef uint32_t n = (getr8(c, R_ECX) if i.op & 2 else i.imm) & 31
    cdef uint32_t a, la = 0, b, r, cf
    cdef uint64_t w
    if load_E_w(c, i, sz, &a, &la):
        return RC_FAULT
    if n == 0:
        return RC_NEXT
    b = getr_sz(c, i.reg, sz)
    if sz == 2:
        if i.op & 1:
            w = (<uint64_t>b << 32) | a
            r = <uint32_t>(w >> n)
            cf = <uint32_t>(w >> (n - 1)) & 1
        else:
            w = (<uint64_t>a << 32) | b
            r = <uint32_t>((w << n) >> 32)
            cf = <uint32_t>(w >> (64 - n)) & 1
    else:
        if i.op & 1:
            w = (<uint64_t>b << 16) | a
            r = <uint32_t>(w >> n) & 0xFFFF
            cf = <uint32_t>(w >> (n - 1)) & 1
        else:
            w = (<uint64_t>a << 16) | b
            r = <uint32_t>((w << n) >> 16) & 0xFFFF
            cf = <uint32_t>(w >> (32 - n)) & 1
    if store_E(c, i, sz, r, la):
        return RC_FAULT
    set_res_flags(c, sz, r, cf | (FL_OF if ((r ^ a) & SIZE_SIGN[sz]) else 0))
    return RC_NEXT

# --- multiply and divide (SDM Vol. 2 "MUL", "IMUL", "DIV", "IDIV") ---

cdef int h_MUL_E(Cpu* c, Insn* i) noexcept nogil:
    """F6/F7 /4: unsigned AX|DX:AX|EDX:EAX = A * E. op = size index."""
    cdef int sz = i.op
    cdef uint32_t b, la = 0
    cdef uint64_t p
    if load_E(c, i, sz, &b, &la):
        return RC_FAULT
    if sz == 0:
        p = (c.regs[R_EAX] & 0xFF) * b
        setr16(c, R_EAX, <uint32_t>p)
        set_res_flags(c, 0, <uint32_t>p, (FL_CF | FL_OF) if (p >> 8) else 0)
    elif sz == 1:
        p = (c.regs[R_EAX] & 0xFFFF) * b
        setr16(c, R_EAX, <uint32_t>p)
        setr16(c, R_EDX, <uint32_t>(p >> 16))
        set_res_flags(c, 1, <uint32_t>p, (FL_CF | FL_OF) if (p >> 16) else 0)
    else:
        p = <uint64_t>c.regs[R_EAX] * b
        c.regs[R_EAX] = <uint32_t>p
        c.regs[R_EDX] = <uint32_t>(p >> 32)
        set_res_flags(c, 2, <uint32_t>p, (FL_CF | FL_OF) if (p >> 32) else 0)
    return RC_NEXT

cdef inline int64_t sext(uint32_t v, int sz) noexcept nogil:
    if sz == 0:
        return <int8_t>v
    if sz == 1:
        return <int16_t>v
    return <int32_t>v

cdef int h_IMUL_E(Cpu* c, Insn* i) noexcept nogil:
    """F6/F7 /5: signed one-operand multiply."""
    cdef int sz = i.op
    cdef uint32_t b, la = 0
    cdef int64_t p
    if load_E(c, i, sz, &b, &la):
        return RC_FAULT
    p = sext(getr_sz(c, R_EAX, sz), sz) * sext(b, sz)
    if sz == 0:
        setr16(c, R_EAX, <uint32_t>p)
    elif sz == 1:
        setr16(c, R_EAX, <uint32_t>p)
        setr16(c, R_EDX, <uint32_t>(p >> 16))
    else:
        c.regs[R_EAX] = <uint32_t>p
        c.regs[R_EDX] = <uint32_t>(<uint64_t>p >> 32)
    set_res_flags(c, sz, <uint32_t>p, (FL_CF | FL_OF) if p != sext(<uint32_t>p, sz) else 0)
    return RC_NEXT

cdef int h_IMUL_GvEv(Cpu* c, Insn* i) noexcept nogil:
    """0F AF (Gv = Gv * Ev) and 69/6B (Gv = Ev * imm; op bit 0)."""
    cdef int sz = opsz(i)
    cdef uint32_t b, la = 0
    cdef int64_t p
    if load_E(c, i, sz, &b, &la):
        return RC_FAULT
    if i.op & 1:
        p = sext(b, sz) * sext(i.imm, sz)
    else:
        p = sext(getr_sz(c, i.reg, sz), sz) * sext(b, sz)
    setr_sz(c, i.reg, sz, <uint32_t>p)
    set_res_flags(c, sz, <uint32_t>p, (FL_CF | FL_OF) if p != sext(<uint32_t>p, sz) else 0)
    return RC_NEXT

cdef int h_DIV_E(Cpu* c, Insn* i) noexcept nogil:
    """F6/F7 /6: unsigned divide; #DE on zero divisor or quotient overflow."""
    cdef int sz = i.op
    cdef uint32_t b, la = 0
    cdef uint64_t n, q
    if load_E(c, i, sz, &b, &la):
        return RC_FAULT
    if b == 0:
        return fault(c, EXC_DE)
    if sz == 0:
        n = c.regs[R_EAX] & 0xFFFF
        q = n // b
        if q > 0xFF:
            return fault(c, EXC_DE)
        setr16(c, R_EAX, <uint32_t>(q | ((n % b) << 8)))
    elif sz == 1:
        n = ((c.regs[R_EDX] & 0xFFFF) << 16) | (c.regs[R_EAX] & 0xFFFF)
        q = n // b
        if q > 0xFFFF:
            return fault(c, EXC_DE)
        setr16(c, R_EAX, <uint32_t>q)
        setr16(c, R_EDX, <uint32_t>(n % b))
    else:
        n = (<uint64_t>c.regs[R_EDX] << 32) | c.regs[R_EAX]
        q = n // b
        if q > 0xFFFFFFFFU:
            return fault(c, EXC_DE)
        c.regs[R_EAX] = <uint32_t>q
        c.regs[R_EDX] = <uint32_t>(n % b)
    return RC_NEXT

cdef int h_IDIV_E(Cpu* c, Insn* i) noexcept nogil:
    """F6/F7 /7: signed divide, quotient truncated toward zero; #DE if it does not fit."""
    cdef int sz = i.op
    cdef uint32_t b, la = 0
    cdef int64_t n, d, q, r
    if load_E(c, i, sz, &b, &la):
        return RC_FAULT
    d = sext(b, sz)
    if d == 0:
        return fault(c, EXC_DE)
    if sz == 0:
        n = <int16_t>(c.regs[R_EAX] & 0xFFFF)
    elif sz == 1:
        n = <int32_t>(((c.regs[R_EDX] & 0xFFFF) << 16) | (c.regs[R_EAX] & 0xFFFF))
    else:
        n = <int64_t>((<uint64_t>c.regs[R_EDX] << 32) | c.regs[R_EAX])
        if n == <int64_t>0x8000000000000000ULL and d == -1:
            return fault(c, EXC_DE)
    q = n // d       # Cython with cdivision: C truncating division
    r = n % d
    if q != sext(<uint32_t>q, sz):
        return fault(c, EXC_DE)
    if sz == 0:
        setr16(c, R_EAX, (<uint32_t>q & 0xFF) | ((<uint32_t>r & 0xFF) << 8))
    elif sz == 1:
        setr16(c, R_EAX, <uint32_t>q)
        setr16(c, R_EDX, <uint32_t>r)
    else:
        c.regs[R_EAX] = <uint32_t>q
        c.regs[R_EDX] = <uint32_t>r
    return RC_NEXT

# --- sign extension ---

cdef int h_CBW(Cpu* c, Insn* i) noexcept nogil:
    """98: CBW (o16) / CWDE."""
    if i.flags & IF_O16:
        setr16(c, R_EAX, <uint32_t><int32_t><int8_t>(c.regs[R_EAX] & 0xFF))
    else:
        c.regs[R_EAX] = <uint32_t><int32_t><int16_t>(c.regs[R_EAX] & 0xFFFF)
    return RC_NEXT

cdef int h_CWD(Cpu* c, Insn* i) noexcept nogil:
    """99: CWD (o16) / CDQ."""
    if i.flags & IF_O16:
        setr16(c, R_EDX, 0xFFFF if c.regs[R_EAX] & 0x8000 else 0)
    else:
        c.regs[R_EDX] = 0xFFFFFFFFU if c.regs[R_EAX] & 0x80000000U else 0
    return RC_NEXT

cdef int h_MOVZX(Cpu* c, Insn* i) noexcept nogil:
    """0F B6/B7: op = source size index."""
    cdef uint32_t v, la = 0
    if load_E(c, i, i.op, &v, &la):
        return RC_FAULT
    setr_sz(c, i.reg, opsz(i), v)
    return RC_NEXT

cdef inline int load_E_flat(Cpu* c, Insn* i, int sz, uint32_t* v) noexcept nogil:
    """A memory operand in a flat segment (the decode mode says so): no base, no limit loads."""
    cdef uint32_t la = ea_of(c, i)
    if la > 0xFFFFFFFFU - ((1U << sz) - 1):
        return seg_fault(c, i.seg)
    return rd_sz(c, la, sz, v)

cdef int h_MOVZX_f(Cpu* c, Insn* i) noexcept nogil:
    cdef uint32_t v
    if load_E_flat(c, i, i.op, &v):
        return RC_FAULT
    setr_sz(c, i.reg, opsz(i), v)
    return RC_NEXT

cdef int h_MOVSX_f(Cpu* c, Insn* i) noexcept nogil:
    cdef uint32_t v
    if load_E_flat(c, i, i.op, &v):
        return RC_FAULT
    setr_sz(c, i.reg, opsz(i), <uint32_t>sext(v, i.op))
    return RC_NEXT

cdef int h_MOVSX(Cpu* c, Insn* i) noexcept nogil:
    """0F BE/BF: op = source size index."""
    cdef uint32_t v, la = 0
    if load_E(c, i, i.op, &v, &la):
        return RC_FAULT
    setr_sz(c, i.reg, opsz(i), <uint32_t>sext(v, i.op))
    return RC_NEXT

# --- BCD adjust (SDM Vol. 2 "AAA", "AAS", "DAA", "DAS", "AAM", "AAD") ---

cdef int h_AAA_AAS(Cpu* c, Insn* i) noexcept nogil:
    """37 AAA / 3F AAS (op = 1)."""
    cdef uint32_t f = compute_flags(c)
    cdef uint32_t al = c.regs[R_EAX] & 0xFF
    cdef uint32_t ax = c.regs[R_EAX] & 0xFFFF
    if (al & 0xF) > 9 or (f & FL_AF):
        if i.op:
            ax = (ax - 6) & 0xFFFF          # AX <- AX - 6; AH <- AH - 1
            ax = (ax - 0x100) & 0xFFFF
        else:
            ax = (ax + 0x106) & 0xFFFF      # AX <- AX + 106H
        f |= FL_AF | FL_CF
    else:
        f &= ~<uint32_t>(FL_AF | FL_CF)
    ax &= 0xFF0F
    setr16(c, R_EAX, ax)
    set_arith_flags(c, (f & ~<uint32_t>(FL_ZF | FL_SF | FL_PF)) | flags_szp(ax & 0xFF, 0))
    return RC_NEXT

cdef int h_DAA_DAS(Cpu* c, Insn* i) noexcept nogil:
    """27 DAA / 2F DAS (op = 1)."""
    cdef uint32_t f = compute_flags(c)
    cdef uint32_t old_al = c.regs[R_EAX] & 0xFF
    cdef uint32_t old_cf = f & FL_CF
    cdef uint32_t al = old_al
    f &= ~<uint32_t>FL_CF
    if (al & 0xF) > 9 or (f & FL_AF):
        if i.op:
            if al < 6:
                f |= FL_CF
            al = (al - 6) & 0xFF
        else:
            if al + 6 > 0xFF:
                f |= FL_CF
            al = (al + 6) & 0xFF
        f |= old_cf | FL_AF
    else:
        f &= ~<uint32_t>FL_AF
    if old_al > 0x99 or old_cf:
        al = (al - 0x60 if i.op else al + 0x60) & 0xFF
        f |= FL_CF
    elif not i.op:
        f &= ~<uint32_t>FL_CF
    # DAS keeps the borrow of AL - 6 here: silicon (SingleStepTests 80286 2F) sets CF for
    # AL < 6 with AF = 1, where the SDM's pseudo-code would clear it
    setr8(c, R_EAX, al)
    set_arith_flags(c, (f & ~<uint32_t>(FL_ZF | FL_SF | FL_PF | FL_OF)) | flags_szp(al, 0))
    return RC_NEXT

cdef int h_AAM(Cpu* c, Insn* i) noexcept nogil:
    """D4 ib: AH = AL / imm, AL = AL mod imm; #DE if imm is 0."""
    cdef uint32_t al = c.regs[R_EAX] & 0xFF
    if i.imm == 0:
        return fault(c, EXC_DE)
    al = ((al // i.imm) << 8) | (al % i.imm)
    setr16(c, R_EAX, al)
    set_res_flags(c, 0, al & 0xFF, 0)
    return RC_NEXT

cdef int h_AAD(Cpu* c, Insn* i) noexcept nogil:
    """D5 ib: AL = (AL + AH * imm) & FFh, AH = 0."""
    cdef uint32_t al = ((c.regs[R_EAX] & 0xFF) + ((c.regs[R_EAX] >> 8) & 0xFF) * i.imm) & 0xFF
    setr16(c, R_EAX, al)
    set_res_flags(c, 0, al, 0)
    return RC_NEXT

# --- exchange and add / compare ---

cdef int h_XADD(Cpu* c, Insn* i) noexcept nogil:
    """0F C0/C1: op = size index."""
    cdef int sz = i.op
    cdef uint32_t a, la = 0
    cdef uint32_t b
    if load_E_w(c, i, sz, &a, &la):
        return RC_FAULT
    b = getr_sz(c, i.reg, sz)
    cdef CcSave saved
    save_cc(c, &saved)
    cdef uint32_t r = alu(c, 0, sz, a, b)
    # SRC <- DEST, then DEST <- sum: with one register as both, the sum wins (SDM XADD)
    if i.flags & IF_MEM:
        if wr_sz(c, la, sz, r):
            restore_cc(c, &saved)
            return RC_FAULT
        setr_sz(c, i.reg, sz, a)
    else:
        setr_sz(c, i.reg, sz, a)
        setr_sz(c, i.rm, sz, r)
    return RC_NEXT

cdef int h_CMPXCHG(Cpu* c, Insn* i) noexcept nogil:
    """0F B0/B1: compare accumulator with Ev; equal: Ev = Gv, else accumulator = Ev."""
    cdef int sz = i.op
    cdef uint32_t a, la = 0
    if load_E_w(c, i, sz, &a, &la):
        return RC_FAULT
    alu(c, 7, sz, getr_sz(c, R_EAX, sz), a)
    if (getr_sz(c, R_EAX, sz)) == a:
        return RC_FAULT if store_E(c, i, sz, getr_sz(c, i.reg, sz), la) else RC_NEXT
    # the destination is written back unchanged on a mismatch (SDM CMPXCHG)
    if store_E(c, i, sz, a, la):
        return RC_FAULT
    setr_sz(c, R_EAX, sz, a)
    return RC_NEXT

cdef int h_CMPXCHG8B(Cpu* c, Insn* i) noexcept nogil:
    """0F C7 /1 m64."""
    cdef uint32_t ea = ea_of(c, i)
    cdef uint32_t la, la_hi
    cdef uint32_t lo, hi
    cdef uint32_t f = compute_flags(c)
    if seg_off_w(c, i.seg, ea, 2, &la) or seg_off_w(c, i.seg, ea + 4, 2, &la_hi):
        return RC_FAULT
    if rd32(c, la, &lo) or rd32(c, la_hi, &hi):
        return RC_FAULT
    if lo == c.regs[R_EAX] and hi == c.regs[R_EDX]:
        if wr32(c, la, c.regs[R_EBX]) or wr32(c, la_hi, c.regs[R_ECX]):
            return RC_FAULT
        set_arith_flags(c, f | FL_ZF)
    else:
        if wr32(c, la, lo) or wr32(c, la_hi, hi):
            return RC_FAULT
        c.regs[R_EAX] = lo
        c.regs[R_EDX] = hi
        set_arith_flags(c, f & ~<uint32_t>FL_ZF)
    return RC_NEXT

cdef int h_BSWAP(Cpu* c, Insn* i) noexcept nogil:
    """0F C8+r (32-bit; the 16-bit form is undefined)."""
    cdef uint32_t v = c.regs[i.reg]
    c.regs[i.reg] = (v >> 24) | ((v >> 8) & 0xFF00) | ((v << 8) & 0xFF0000) | (v << 24)
    return RC_NEXT

# --- bit test and scan ---

cdef int h_BT(Cpu* c, Insn* i) noexcept nogil:
    """BT/BTS/BTR/BTC (op 0..3); i.imm2 = 1 for the 0F BA imm8 form.
    A register bit offset addresses a bit string beyond the operand in memory (SDM BT)."""
    cdef int sz = opsz(i)
    cdef uint32_t bits = 8 << sz
    cdef uint32_t off, v, la = 0, mask, f
    cdef int32_t soff
    if i.imm2:
        off = i.imm & (bits - 1)
        if (load_E_w(c, i, sz, &v, &la) if i.op else load_E(c, i, sz, &v, &la)):
            return RC_FAULT
    else:
        off = getr_sz(c, i.reg, sz)
        if i.flags & IF_MEM:
            soff = <int32_t>sext(off, sz)
            off = ea_of(c, i) + <uint32_t>((soff >> (3 + sz)) * (<int32_t>bits >> 3))
            if (seg_off_w(c, i.seg, off, sz, &la) if i.op else seg_off(c, i.seg, off, sz, &la)):
                return RC_FAULT
            if rd_sz(c, la, sz, &v):
                return RC_FAULT
            off = <uint32_t>soff & (bits - 1)
        else:
            off &= bits - 1
            v = getr_sz(c, i.rm, sz)
    mask = (<uint32_t>1) << off
    f = compute_flags(c) & ~<uint32_t>FL_CF
    if v & mask:
        f |= FL_CF
    set_arith_flags(c, f)
    if i.op == 0:
        return RC_NEXT
    if i.op == 1:
        v |= mask
    elif i.op == 2:
        v &= ~mask
    else:
        v ^= mask
    if i.flags & IF_MEM:
        return wr_sz(c, la, sz, v)
    setr_sz(c, i.rm, sz, v)
    return RC_NEXT

cdef int h_BSF_BSR(Cpu* c, Insn* i) noexcept nogil:
    """0F BC BSF / 0F BD BSR (op = 1). Zero source: ZF = 1, destination unchanged."""
    cdef int sz = opsz(i)
    cdef uint32_t v, la = 0, k
    cdef uint32_t f
    if load_E(c, i, sz, &v, &la):
        return RC_FAULT
    f = compute_flags(c)
    if v == 0:
        set_arith_flags(c, f | FL_ZF)
        return RC_NEXT
    if i.op:
        k = 31 - __builtin_clz(v)
    else:
        k = __builtin_ctz(v)
    setr_sz(c, i.reg, sz, k)
    set_arith_flags(c, f & ~<uint32_t>FL_ZF)
    return RC_NEXT
