# Operand access: registers by size, effective addresses, and the arithmetic
# cores shared by every form of an instruction (they also record lazy flags).

cdef inline uint32_t getr8(Cpu* c, int r) noexcept nogil:
    # AL CL DL BL AH CH DH BH (SDM Vol. 2 Table 2-2)
    return (c.regs[r & 3] >> ((r & 4) << 1)) & 0xFF

cdef inline void setr8(Cpu* c, int r, uint32_t v) noexcept nogil:
    cdef int sh = (r & 4) << 1
    c.regs[r & 3] = (c.regs[r & 3] & ~(<uint32_t>0xFF << sh)) | ((v & 0xFF) << sh)

cdef inline uint32_t getr16(Cpu* c, int r) noexcept nogil:
    return c.regs[r] & 0xFFFF

cdef inline void setr16(Cpu* c, int r, uint32_t v) noexcept nogil:
    c.regs[r] = (c.regs[r] & 0xFFFF0000U) | (v & 0xFFFF)

cdef inline uint32_t getr32(Cpu* c, int r) noexcept nogil:
    return c.regs[r]

cdef inline void setr32(Cpu* c, int r, uint32_t v) noexcept nogil:
    c.regs[r] = v

cdef inline uint32_t getr_sz(Cpu* c, int r, int sz) noexcept nogil:
    if sz == 0:
        return getr8(c, r)
    if sz == 1:
        return getr16(c, r)
    return c.regs[r]

cdef inline void setr_sz(Cpu* c, int r, int sz, uint32_t v) noexcept nogil:
    if sz == 0:
        setr8(c, r, v)
    elif sz == 1:
        setr16(c, r, v)
    else:
        c.regs[r] = v

cdef inline uint32_t ea_of(Cpu* c, Insn* i) noexcept nogil:
    """Effective address (offset in the segment) of the memory operand."""
    cdef uint32_t ea = c.regs[i.rm] + (c.regs[i.index] << i.scale) + i.disp
    if i.flags & IF_A16:
        ea &= 0xFFFF
    return ea

cdef inline int seg_fault(Cpu* c, int seg) noexcept nogil:
    """A segment-limit violation: #SS(0) through SS, #GP(0) otherwise (SDM Vol. 3 §6.15)."""
    c.exc_vector = EXC_SS if seg == S_SS and (c.pe or not c.rm_ss_fault_gp) else EXC_GP
    c.exc_has_err = 1
    c.exc_err = 0
    return RC_FAULT

cdef inline int seg_off(Cpu* c, int seg, uint32_t ea, int sz, uint32_t* la) noexcept nogil:
    """Linear address for reading 2**sz bytes at offset ea in segment seg, or a fault."""
    cdef Seg* s = &c.seg[seg]
    if <uint64_t>ea - s.lo[0][sz] > s.span[0][sz]:
        return seg_fault(c, seg)
    la[0] = s.base + ea
    return 0

cdef inline int seg_off_w(Cpu* c, int seg, uint32_t ea, int sz, uint32_t* la) noexcept nogil:
    """The same for writing (and read-modify-write): the segment must be writable data."""
    cdef Seg* s = &c.seg[seg]
    if <uint64_t>ea - s.lo[1][sz] > s.span[1][sz]:
        return seg_fault(c, seg)
    la[0] = s.base + ea
    return 0

cdef inline int seg_addr(Cpu* c, Insn* i, int sz, uint32_t* la) noexcept nogil:
    """Linear address of the instruction's memory operand (2**sz bytes) for a read, or a fault."""
    return seg_off(c, i.seg, ea_of(c, i), sz, la)

cdef inline int seg_addr_w(Cpu* c, Insn* i, int sz, uint32_t* la) noexcept nogil:
    """The same for a write or a read-modify-write."""
    return seg_off_w(c, i.seg, ea_of(c, i), sz, la)

cdef void seg_set_limits(Seg* s, bint real_mode) noexcept nogil:
    """Recompute the access checks from the cached limit and type. Valid offsets are
    [0, limit], or (limit, 64 KiB - 1 or 4 GiB - 1 by the B bit] for expand-down data
    (SDM Vol. 3 §3.4.5.1). In protected mode only readable segments can be read and
    only writable data segments written (§5.4); real mode has no types."""
    cdef bint down = (s.attr & 0x18) == 0x10 and (s.attr & 0x04) != 0
    cdef bint code = (s.attr & 0x18) == 0x18
    cdef bint readable = real_mode or not code or (s.attr & 0x02) != 0
    cdef bint writable = real_mode or (not code and (s.attr & 0x02) != 0)
    cdef uint64_t first = 0
    cdef uint64_t last = s.limit
    cdef uint64_t n
    cdef int k
    if down:
        first = <uint64_t>s.limit + 1
        last = 0xFFFFFFFFU if s.attr & 0x4000 else 0xFFFF
    for k in range(3):
        n = (1 << k) - 1
        if last < first + n:
            s.lo[0][k] = 0x100000000ULL
            s.span[0][k] = 0
        else:
            s.lo[0][k] = first
            s.span[0][k] = last - n - first
        s.lo[1][k] = s.lo[0][k] if writable else 0x100000000ULL
        s.span[1][k] = s.span[0][k] if writable else 0
        if not readable:
            s.lo[0][k] = 0x100000000ULL
            s.span[0][k] = 0
    s.flat = 1 if (s.base == 0 and s.limit == 0xFFFFFFFFU and not down and readable and writable) else 0

cdef void seg_make_unusable(Seg* s) noexcept nogil:
    """A segment register loaded with a null selector: any access through it faults."""
    cdef int k, w
    for w in range(2):
        for k in range(3):
            s.lo[w][k] = 0x100000000ULL
            s.span[w][k] = 0
    s.flat = 0

# ALU cores. op: 0 ADD 1 OR 2 ADC 3 SBB 4 AND 5 SUB 6 XOR 7 CMP (ModRM.reg order).
cdef inline uint32_t alu(Cpu* c, int op, int sz, uint32_t a, uint32_t b) noexcept nogil:
    cdef uint32_t r, cin
    cdef uint32_t m = SIZE_MASK[sz]
    if op == 0:
        r = a + b
        c.cc_op = CC_ADD * 4 + sz
    elif op == 1:
        r = a | b
        c.cc_op = CC_LOGIC * 4 + sz
    elif op == 2:
        cin = get_cf(c)
        r = a + b + cin
        c.cc_aux = cin
        c.cc_op = CC_ADC * 4 + sz
    elif op == 3:
        cin = get_cf(c)
        r = a - b - cin
        c.cc_aux = cin
        c.cc_op = CC_SBB * 4 + sz
    elif op == 4:
        r = a & b
        c.cc_op = CC_LOGIC * 4 + sz
    elif op == 6:
        r = a ^ b
        c.cc_op = CC_LOGIC * 4 + sz
    else:
        r = a - b
        c.cc_op = CC_SUB * 4 + sz
    r &= m
    c.cc_res = r
    c.cc_src1 = a
    c.cc_src2 = b
    return r

cdef inline uint32_t inc_dec(Cpu* c, int is_dec, int sz, uint32_t a) noexcept nogil:
    c.cc_aux = get_cf(c)
    cdef uint32_t r
    if is_dec:
        r = (a - 1) & SIZE_MASK[sz]
        c.cc_op = CC_DEC * 4 + sz
    else:
        r = (a + 1) & SIZE_MASK[sz]
        c.cc_op = CC_INC * 4 + sz
    c.cc_res = r
    c.cc_src1 = a
    c.cc_src2 = 1
    return r

cdef inline void set_res_flags(Cpu* c, int sz, uint32_t res, uint32_t cf_of_af) noexcept nogil:
    c.cc_op = CC_RES * 4 + sz
    c.cc_res = res
    c.cc_aux = cf_of_af


cdef struct CcSave:
    uint32_t op, res, src1, src2, aux

cdef inline void save_cc(Cpu* c, CcSave* s) noexcept nogil:
    s.op = c.cc_op
    s.res = c.cc_res
    s.src1 = c.cc_src1
    s.src2 = c.cc_src2
    s.aux = c.cc_aux

cdef inline void restore_cc(Cpu* c, CcSave* s) noexcept nogil:
    c.cc_op = s.op
    c.cc_res = s.res
    c.cc_src1 = s.src1
    c.cc_src2 = s.src2
    c.cc_aux = s.aux
