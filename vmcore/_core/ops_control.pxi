# Control transfer. Every handler here ends its block: it sets cpu.eip and
# returns RC_BRANCH. Relative targets are resolved at decode time (i.disp).

cdef int h_BLOCK_END(Cpu* c, Insn* i) noexcept nogil:
    """Synthetic record closing a block that ends without a branch (not counted)."""
    c.eip = i.next_eip
    return RC_BRANCH

cdef int h_STALE(Cpu* c, Insn* i) noexcept nogil:
    """Stands in for records whose code was overwritten while their block ran."""
    c.eip = i.next_eip - i.len
    return RC_RESTART

cdef int h_JMP_rel(Cpu* c, Insn* i) noexcept nogil:
    """EB cb / E9 cd."""
    c.eip = i.disp
    return RC_BRANCH

cdef int h_CALL_rel(Cpu* c, Insn* i) noexcept nogil:
    """E8 cd."""
    if push(c, opsz(i), i.next_eip):
        return RC_FAULT
    c.eip = i.disp
    return RC_BRANCH

cdef int h_CALL_rel32(Cpu* c, Insn* i) noexcept nogil:
    if push(c, 2, i.next_eip):
        return RC_FAULT
    c.eip = i.disp
    return RC_BRANCH

cdef int h_CALL_rel32_flat(Cpu* c, Insn* i) noexcept nogil:
    if push_flat(c, i.next_eip):
        return RC_FAULT
    c.eip = i.disp
    return RC_BRANCH

cdef int h_RET32_flat(Cpu* c, Insn* i) noexcept nogil:
    cdef uint32_t v
    if pop_flat(c, &v):
        return RC_FAULT
    c.eip = v
    return RC_BRANCH

cdef int h_RET(Cpu* c, Insn* i) noexcept nogil:
    """C3 / C2 iw (imm = bytes to release)."""
    cdef int sz = opsz(i)
    cdef uint32_t v
    if pop(c, sz, &v):
        return RC_FAULT
    pop_commit(c, sz)
    c.regs[R_ESP] = sp_update(c, c.regs[R_ESP], c.regs[R_ESP] + i.imm)
    c.eip = v & 0xFFFF if sz == 1 else v
    return RC_BRANCH

cdef int h_RET32(Cpu* c, Insn* i) noexcept nogil:
    cdef uint32_t v
    if pop(c, 2, &v):
        return RC_FAULT
    pop_commit(c, 2)
    c.eip = v
    return RC_BRANCH

cdef int h_JMP_E(Cpu* c, Insn* i) noexcept nogil:
    """FF /4."""
    cdef int sz = opsz(i)
    cdef uint32_t v, la = 0
    if load_E(c, i, sz, &v, &la):
        return RC_FAULT
    c.eip = v & 0xFFFF if sz == 1 else v
    return RC_BRANCH

cdef int h_CALL_E(Cpu* c, Insn* i) noexcept nogil:
    """FF /2: the target is read before the return address is pushed."""
    cdef int sz = opsz(i)
    cdef uint32_t v, la = 0
    if load_E(c, i, sz, &v, &la):
        return RC_FAULT
    if push(c, sz, i.next_eip):
        return RC_FAULT
    c.eip = v & 0xFFFF if sz == 1 else v
    return RC_BRANCH

cdef int h_LOOP(Cpu* c, Insn* i) noexcept nogil:
    """E2 LOOP, E1 LOOPE (op 1), E0 LOOPNE (op 2), E3 JECXZ (op 3). Counter is CX with a16."""
    cdef uint32_t cnt
    cdef bint take
    if i.flags & IF_A16:
        cnt = c.regs[R_ECX] & 0xFFFF
        if i.op != 3:
            cnt = (cnt - 1) & 0xFFFF
            setr16(c, R_ECX, cnt)
    else:
        cnt = c.regs[R_ECX]
        if i.op != 3:
            cnt -= 1
            c.regs[R_ECX] = cnt
    if i.op == 3:
        take = cnt == 0
    elif i.op == 0:
        take = cnt != 0
    elif i.op == 1:
        take = cnt != 0 and cond_true(c, 4)
    else:
        take = cnt != 0 and cond_true(c, 5)
    c.eip = i.disp if take else i.next_eip
    return RC_BRANCH
