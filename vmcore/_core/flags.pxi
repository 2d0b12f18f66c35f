# Lazy arithmetic flags (OF SF ZF AF PF CF), computed only when read.
# Arithmetic records cc_op (kind * 4 + size index), its operands and its result.

cdef uint8_t PARITY[256]
cdef void init_parity() noexcept nogil:
    cdef int v, b, n
    for v in range(256):
        n = 0
        for b in range(8):
            n += (v >> b) & 1
        PARITY[v] = FL_PF if (n & 1) == 0 else 0

cdef uint32_t SIZE_MASK[3]
SIZE_MASK[0] = 0xFF
SIZE_MASK[1] = 0xFFFF
SIZE_MASK[2] = 0xFFFFFFFFU
cdef uint32_t SIZE_SIGN[3]
SIZE_SIGN[0] = 0x80
SIZE_SIGN[1] = 0x8000
SIZE_SIGN[2] = 0x80000000U

cdef inline uint32_t flags_szp(uint32_t res, int sz) noexcept nogil:
    cdef uint32_t f = PARITY[res & 0xFF]
    if (res & SIZE_MASK[sz]) == 0:
        f |= FL_ZF
    if res & SIZE_SIGN[sz]:
        f |= FL_SF
    return f

cdef uint32_t compute_flags(Cpu* c) noexcept nogil:
    """The six arithmetic flags as EFLAGS bits (SDM Vol. 1 Appendix A)."""
    cdef int kind = c.cc_op >> 2
    cdef int sz = c.cc_op & 3
    cdef uint32_t m = SIZE_MASK[sz]
    cdef uint32_t sign = SIZE_SIGN[sz]
    cdef uint32_t res = c.cc_res & m
    cdef uint32_t a = c.cc_src1 & m
    cdef uint32_t b = c.cc_src2 & m
    cdef uint32_t f
    if kind == CC_EFLAGS:
        return c.cc_src1 & FL_ARITH
    f = flags_szp(res, sz)
    if kind == CC_LOGIC:
        return f
    if kind == CC_RES:
        return f | (c.cc_aux & (FL_CF | FL_OF | FL_AF))
    f |= (a ^ b ^ res) & FL_AF
    if kind == CC_ADD or kind == CC_ADC or kind == CC_INC:
        if ((a ^ res) & (b ^ res)) & sign:
            f |= FL_OF
        if kind == CC_ADD:
            if res < a:
                f |= FL_CF
        elif kind == CC_ADC:
            if res < a or (c.cc_aux and res == a):
                f |= FL_CF
        else:
            f |= c.cc_aux & FL_CF
    else:   # SUB, SBB, DEC: res = a - b (- borrow)
        if ((a ^ b) & (a ^ res)) & sign:
            f |= FL_OF
        if kind == CC_SUB:
            if a < b:
                f |= FL_CF
        elif kind == CC_SBB:
            if a < b or (c.cc_aux and a == b):
                f |= FL_CF
        else:
            f |= c.cc_aux & FL_CF
    return f

cdef inline uint32_t get_cf(Cpu* c) noexcept nogil:
    cdef int kind = c.cc_op >> 2
    cdef uint32_t m
    if kind == CC_SUB:
        m = SIZE_MASK[c.cc_op & 3]
        return 1 if (c.cc_src1 & m) < (c.cc_src2 & m) else 0
    if kind == CC_LOGIC:
        return 0
    return compute_flags(c) & FL_CF

cdef inline uint32_t get_eflags(Cpu* c) noexcept nogil:
    return (c.eflags & ~<uint32_t>FL_ARITH) | compute_flags(c) | FL_FIXED1

cdef inline void set_arith_flags(Cpu* c, uint32_t f) noexcept nogil:
    c.cc_op = CC_EFLAGS << 2
    c.cc_src1 = f & FL_ARITH

cdef inline void set_eflags(Cpu* c, uint32_t v, uint32_t writable) noexcept nogil:
    """Writes the bits of v selected by writable (POPF, IRET, SAHF...)."""
    cdef uint32_t f = compute_flags(c)
    if not c.pe:
        writable &= ~c.rm_flags_zero
    f = (f & ~writable) | (v & writable)
    c.eflags = (c.eflags & ~writable & ~<uint32_t>FL_ARITH) | (v & writable & ~<uint32_t>FL_ARITH) | FL_FIXED1
    set_arith_flags(c, f)

cdef inline bint cond_true(Cpu* c, int cc) noexcept nogil:
    """Condition code cc (the low nibble of Jcc/SETcc/CMOVcc, SDM Vol. 1 Appendix B)."""
    cdef int kind = c.cc_op >> 2
    cdef int sz = c.cc_op & 3
    cdef uint32_t m, a, b, sh
    cdef uint32_t f
    cdef bint r
    # fast paths straight from the operands of the last compare/subtract or logic op
    if kind == CC_SUB or kind == CC_LOGIC:
        m = SIZE_MASK[sz]
        sh = 24 - 8 * sz if sz < 2 else 0
        if kind == CC_SUB:
            a = c.cc_src1 & m
            b = c.cc_src2 & m
            if (cc >> 1) == 1:      # B / AE
                r = a < b
                return r ^ (cc & 1)
            if (cc >> 1) == 2:      # Z / NZ
                r = a == b
                return r ^ (cc & 1)
            if (cc >> 1) == 3:      # BE / A
                r = a <= b
                return r ^ (cc & 1)
            if (cc >> 1) == 6:      # L / GE
                r = <int32_t>(a << sh) < <int32_t>(b << sh)
                return r ^ (cc & 1)
            if (cc >> 1) == 7:      # LE / G
                r = <int32_t>(a << sh) <= <int32_t>(b << sh)
                return r ^ (cc & 1)
        else:
            a = c.cc_res & m
            if (cc >> 1) == 2:
                r = a == 0
                return r ^ (cc & 1)
            if (cc >> 1) == 4:      # S / NS
                r = <int32_t>(a << sh) < 0
                return r ^ (cc & 1)
    f = compute_flags(c)
    cc_base = cc >> 1
    if cc_base == 0:
        r = (f & FL_OF) != 0
    elif cc_base == 1:
        r = (f & FL_CF) != 0
    elif cc_base == 2:
        r = (f & FL_ZF) != 0
    elif cc_base == 3:
        r = (f & (FL_CF | FL_ZF)) != 0
    elif cc_base == 4:
        r = (f & FL_SF) != 0
    elif cc_base == 5:
        r = (f & FL_PF) != 0
    elif cc_base == 6:
        r = ((f & FL_SF) != 0) != ((f & FL_OF) != 0)
    else:
        r = ((f & FL_ZF) != 0) or (((f & FL_SF) != 0) != ((f & FL_OF) != 0))
    return r ^ (cc & 1)
