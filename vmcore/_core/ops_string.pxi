# String instructions (SDM Vol. 2 "MOVS", "CMPS", "STOS", "LODS", "SCAS") with
# REP/REPE/REPNE. ESI/EDI (SI/DI with a 16-bit address size) step by the
# element size, backwards when DF is set. A repeated instruction runs at most
# REP_CHUNK elements per call, then restarts from its EIP with the registers
# updated, as a CPU lets interrupts in between iterations (SDM Vol. 2 REP): the
# run loop's budget, interrupts and exits are checked in between, so a guest
# with ECX = 4 G cannot hold run() past its budget. A fault leaves the registers
# at the faulting element so the instruction restarts there.

cdef inline uint32_t str_mask(Insn* i) noexcept nogil:
    return 0xFFFF if i.flags & IF_A16 else 0xFFFFFFFFU

cdef inline void str_step(Cpu* c, int r, uint32_t amask, int32_t delta) noexcept nogil:
    c.regs[r] = (c.regs[r] & ~amask) | ((c.regs[r] + <uint32_t>delta) & amask)

cdef int h_STRING(Cpu* c, Insn* i) noexcept nogil:
    """op: 0 MOVS 1 CMPS 2 STOS 3 LODS 4 SCAS; size index in imm2; source segment in seg."""
    cdef int sz = i.imm2
    cdef uint32_t amask = str_mask(i)
    cdef int32_t delta = (1 << sz) * (-1 if c.eflags & FL_DF else 1)
    cdef bint rep = (i.flags & (IF_REP | IF_REPNE)) != 0
    cdef uint32_t a, b, src, dst
    cdef int op = i.op
    cdef uint32_t done = 0
    while True:
        if rep and (c.regs[R_ECX] & amask) == 0:
            break
        if done == REP_CHUNK:
            # not finished: the rest runs when the instruction is dispatched again
            c.n_rep_chunks += 1
            c.eip = i.next_eip - i.len
            return RC_RESTART
        done += 1
        if op == 0:
            if seg_off(c, i.seg, c.regs[R_ESI] & amask, sz, &src) or rd_sz(c, src, sz, &a):
                return RC_FAULT
            if seg_off_w(c, S_ES, c.regs[R_EDI] & amask, sz, &dst) or wr_sz(c, dst, sz, a):
                return RC_FAULT
            str_step(c, R_ESI, amask, delta)
            str_step(c, R_EDI, amask, delta)
        elif op == 1:
            if seg_off(c, i.seg, c.regs[R_ESI] & amask, sz, &src) or rd_sz(c, src, sz, &a):
                return RC_FAULT
            if seg_off(c, S_ES, c.regs[R_EDI] & amask, sz, &dst) or rd_sz(c, dst, sz, &b):
                return RC_FAULT
            alu(c, 7, sz, a, b)
            str_step(c, R_ESI, amask, delta)
            str_step(c, R_EDI, amask, delta)
        elif op == 2:
            if seg_off_w(c, S_ES, c.regs[R_EDI] & amask, sz, &dst) or wr_sz(c, dst, sz, getr_sz(c, R_EAX, sz)):
                return RC_FAULT
            str_step(c, R_EDI, amask, delta)
        elif op == 3:
            if seg_off(c, i.seg, c.regs[R_ESI] & amask, sz, &src) or rd_sz(c, src, sz, &a):
                return RC_FAULT
            setr_sz(c, R_EAX, sz, a)
            str_step(c, R_ESI, amask, delta)
        else:
            if seg_off(c, S_ES, c.regs[R_EDI] & amask, sz, &dst) or rd_sz(c, dst, sz, &b):
                return RC_FAULT
            alu(c, 7, sz, getr_sz(c, R_EAX, sz), b)
            str_step(c, R_EDI, amask, delta)
        if c.mmio_log_n:
            mmio_retire(c)      # this element's MMIO accesses are done (memory.pxi, MMIO)
        if not rep:
            break
        str_step(c, R_ECX, amask, -1)
        if op == 1 or op == 4:
            # REPE stops when ZF = 0, REPNE when ZF = 1
            if (i.flags & IF_REP) and not cond_true(c, 4):
                break
            if (i.flags & IF_REPNE) and cond_true(c, 4):
                break
    return RC_NEXT
