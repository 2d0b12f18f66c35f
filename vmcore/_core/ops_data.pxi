# Data transfer: stack, moves that are not table-generated, exchange, flags
# register transfers, segment registers.
# The stack is addressed through SS with a 32-bit ESP (flat protected mode).

cdef inline uint32_t sp_update(Cpu* c, uint32_t esp, uint32_t new_sp) noexcept nogil:
    """ESP after a stack operation moved the stack pointer to new_sp: with a 16-bit SS only SP
    changes and wraps, the high word of ESP stays (SDM Vol. 1 §6.2.3, Vol. 3 §6.12.1)."""
    return (esp & ~c.ss_mask) | (new_sp & c.ss_mask)

cdef inline int stack_read(Cpu* c, uint32_t off, int sz, uint32_t* v) noexcept nogil:
    """Read 2**sz bytes at SS:off (off already wrapped to the stack size)."""
    cdef uint32_t la
    if seg_off(c, S_SS, off & c.ss_mask, sz, &la):
        return RC_FAULT
    return rd_sz(c, la, sz, v)

cdef inline int push(Cpu* c, int sz, uint32_t v) noexcept nogil:
    """Push a 16- (sz 1) or 32-bit (sz 2) value; ESP (SP with a 16-bit stack) changes only
    if the write succeeds."""
    cdef uint32_t esp = c.regs[R_ESP]
    cdef uint32_t off = (esp - (2 if sz == 1 else 4)) & c.ss_mask
    cdef uint32_t la
    if seg_off_w(c, S_SS, off, sz, &la):
        return RC_FAULT
    if wr_sz(c, la, sz, v):
        return RC_FAULT
    c.regs[R_ESP] = (esp & ~c.ss_mask) | off
    return 0

cdef inline int pop(Cpu* c, int sz, uint32_t* v) noexcept nogil:
    """Read the top of the stack; the caller commits ESP with pop_commit()."""
    return stack_read(c, c.regs[R_ESP], sz, v)

cdef inline void pop_commit(Cpu* c, int sz) noexcept nogil:
    cdef uint32_t esp = c.regs[R_ESP]
    c.regs[R_ESP] = sp_update(c, esp, esp + (2 if sz == 1 else 4))

cdef int h_PUSH_r32(Cpu* c, Insn* i) noexcept nogil:
    """50+r."""
    return push(c, 2, c.regs[i.reg])

cdef int h_POP_r32(Cpu* c, Insn* i) noexcept nogil:
    """58+r. POP ESP loads the value read, after the increment (SDM POP)."""
    cdef uint32_t v
    if pop(c, 2, &v):
        return RC_FAULT
    pop_commit(c, 2)
    c.regs[i.reg] = v
    return RC_NEXT

cdef int h_PUSH_r16(Cpu* c, Insn* i) noexcept nogil:
    return push(c, 1, c.regs[i.reg])

cdef int h_POP_r16(Cpu* c, Insn* i) noexcept nogil:
    cdef uint32_t v
    if pop(c, 1, &v):
        return RC_FAULT
    pop_commit(c, 1)
    setr16(c, i.reg, v)
    return RC_NEXT

cdef int h_PUSH_I(Cpu* c, Insn* i) noexcept nogil:
    """68 Iz / 6A Ib (sign-extended at decode)."""
    return push(c, opsz(i), i.imm)

cdef int h_PUSH_E(Cpu* c, Insn* i) noexcept nogil:
    """FF /6."""
    cdef int sz = opsz(i)
    cdef uint32_t v, la = 0
    if load_E(c, i, sz, &v, &la):
        return RC_FAULT
    return push(c, sz, v)

cdef int h_POP_E(Cpu* c, Insn* i) noexcept nogil:
    """8F /0. A memory destination using ESP is computed after the pop (SDM POP)."""
    cdef int sz = opsz(i)
    cdef uint32_t v, la = 0
    cdef uint32_t old_esp = c.regs[R_ESP]
    if pop(c, sz, &v):
        return RC_FAULT
    pop_commit(c, sz)
    if (i.flags & IF_MEM) and seg_addr_w(c, i, sz, &la):
        c.regs[R_ESP] = old_esp
        return RC_FAULT
    if store_E(c, i, sz, v, la):
        c.regs[R_ESP] = old_esp
        return RC_FAULT
    return RC_NEXT

cdef int h_PUSHA(Cpu* c, Insn* i) noexcept nogil:
    """60: EAX ECX EDX EBX (original) ESP EBP ESI EDI."""
    cdef int sz = opsz(i)
    cdef uint32_t old_esp = c.regs[R_ESP]
    cdef uint32_t saved[8]
    cdef int k
    for k in range(8):
        saved[k] = c.regs[k]
    for k in range(8):
        if push(c, sz, saved[k]):
            c.regs[R_ESP] = old_esp
            return RC_FAULT
    return RC_NEXT

cdef int h_POPA(Cpu* c, Insn* i) noexcept nogil:
    """61: the stored ESP is skipped."""
    cdef int sz = opsz(i)
    cdef uint32_t vals[8]
    cdef uint32_t step = 2 if sz == 1 else 4
    cdef uint32_t esp = c.regs[R_ESP]
    cdef int k
    for k in range(8):
        if stack_read(c, esp + step * (7 - k), sz, &vals[k]):
            return RC_FAULT
    for k in range(8):
        if k != R_ESP:
            setr_sz(c, k, sz, vals[k])
    c.regs[R_ESP] = sp_update(c, esp, esp + 8 * step)
    return RC_NEXT

cdef int h_PUSHF(Cpu* c, Insn* i) noexcept nogil:
    """9C: VM and RF are stored as 0 (SDM PUSHF); #GP(0) in virtual-8086 mode below IOPL 3."""
    if (c.eflags & FL_VM) and ((c.eflags >> 12) & 3) < 3:
        return fault_err(c, EXC_GP, 0)
    return push(c, opsz(i), get_eflags(c) & ~<uint32_t>(FL_VM | FL_RF))

cdef uint32_t popf_mask(Cpu* c, int sz) noexcept nogil:
    """Bits POPF may change (SDM POPF): never VM, RF, VIF, VIP; IOPL only at CPL 0;
    IF only at CPL <= IOPL. This is the sensitive, unprivileged behaviour: at CPL > 0
    POPF silently keeps IF."""
    cdef uint32_t m = FL_ARITH | FL_TF | FL_DF | FL_NT | FL_AC | FL_ID
    if not c.pe or c.cpl == 0:
        m |= FL_IOPL
    if not c.pe or c.cpl <= ((c.eflags >> 12) & 3):
        m |= FL_IF
    if sz == 1:
        m &= 0xFFFF
    return m

cdef int h_POPF(Cpu* c, Insn* i) noexcept nogil:
    """9D. #GP(0) in virtual-8086 mode below IOPL 3."""
    cdef int sz = opsz(i)
    cdef uint32_t v
    if (c.eflags & FL_VM) and ((c.eflags >> 12) & 3) < 3:
        return fault_err(c, EXC_GP, 0)
    if pop(c, sz, &v):
        return RC_FAULT
    pop_commit(c, sz)
    set_eflags(c, v, popf_mask(c, sz))
    c.eip = i.next_eip   # TF or IF may have changed: end the block
    return RC_BRANCH

cdef int h_LAHF(Cpu* c, Insn* i) noexcept nogil:
    """9F: AH = SF:ZF:0:AF:0:PF:1:CF."""
    setr8(c, 4, (get_eflags(c) & 0xD5) | 0x02)
    return RC_NEXT

cdef int h_SAHF(Cpu* c, Insn* i) noexcept nogil:
    """9E."""
    set_eflags(c, getr8(c, 4), FL_SF | FL_ZF | FL_AF | FL_PF | FL_CF)
    return RC_NEXT

cdef int h_FLAG_OP(Cpu* c, Insn* i) noexcept nogil:
    """F5 CMC, F8 CLC, F9 STC, FC CLD, FD STD (op = low opcode nibble)."""
    cdef uint32_t f
    if i.op == 0xC:
        c.eflags &= ~<uint32_t>FL_DF
        return RC_NEXT
    if i.op == 0xD:
        c.eflags |= FL_DF
        return RC_NEXT
    f = compute_flags(c)
    if i.op == 0x5:
        f ^= FL_CF
    elif i.op == 0x8:
        f &= ~<uint32_t>FL_CF
    else:
        f |= FL_CF
    set_arith_flags(c, f)
    return RC_NEXT

cdef int h_CLI_STI(Cpu* c, Insn* i) noexcept nogil:
    """FA CLI / FB STI (op = 1): #GP(0) if CPL > IOPL in protected mode."""
    if c.pe and c.cpl > ((c.eflags >> 12) & 3):
        return fault_err(c, EXC_GP, 0)
    if i.op:
        if not (c.eflags & FL_IF):
            c.int_shadow = 1
            c.attention = 1
        c.eflags |= FL_IF
    else:
        c.eflags &= ~<uint32_t>FL_IF
    c.eip = i.next_eip
    return RC_BRANCH

cdef int h_LEA(Cpu* c, Insn* i) noexcept nogil:
    """8D: the offset only, no segment base."""
    setr_sz(c, i.reg, opsz(i), ea_of(c, i))
    return RC_NEXT

cdef int h_LEA_d(Cpu* c, Insn* i) noexcept nogil:
    c.regs[i.reg] = c.regs[i.rm] + (c.regs[i.index] << i.scale) + i.disp
    return RC_NEXT

cdef int h_MOV_r32_I(Cpu* c, Insn* i) noexcept nogil:
    """B8+r id."""
    c.regs[i.reg] = i.imm
    return RC_NEXT

cdef int h_MOV_d_load(Cpu* c, Insn* i) noexcept nogil:
    """8B /r, memory source, 32-bit, 32-bit address: the most frequent instruction."""
    cdef uint32_t la
    if seg_off(c, i.seg, c.regs[i.rm] + (c.regs[i.index] << i.scale) + i.disp, 2, &la):
        return RC_FAULT
    return rd32(c, la, &c.regs[i.reg])

cdef int h_MOV_d_load_flat(Cpu* c, Insn* i) noexcept nogil:
    """8B /r through a flat segment (the decode mode says so): no base, no limit loads."""
    cdef uint32_t la = c.regs[i.rm] + (c.regs[i.index] << i.scale) + i.disp
    if la > 0xFFFFFFFCU:
        return seg_fault(c, i.seg)
    return rd32(c, la, &c.regs[i.reg])

cdef int h_MOV_d_store_flat(Cpu* c, Insn* i) noexcept nogil:
    cdef uint32_t la = c.regs[i.rm] + (c.regs[i.index] << i.scale) + i.disp
    if la > 0xFFFFFFFCU:
        return seg_fault(c, i.seg)
    return wr32(c, la, c.regs[i.reg])

cdef inline int push_flat(Cpu* c, uint32_t v) noexcept nogil:
    """push for a flat 32-bit stack: a wrap below 0 lands at 4 GiB - 4, still in the limit."""
    cdef uint32_t esp = c.regs[R_ESP] - 4
    if wr32(c, esp, v):
        return RC_FAULT
    c.regs[R_ESP] = esp
    return 0

cdef inline int pop_flat(Cpu* c, uint32_t* v) noexcept nogil:
    cdef uint32_t esp = c.regs[R_ESP]
    if esp > 0xFFFFFFFCU:
        return seg_fault(c, S_SS)
    if rd32(c, esp, v):
        return RC_FAULT
    c.regs[R_ESP] = esp + 4
    return 0

cdef int h_PUSH_r32_flat(Cpu* c, Insn* i) noexcept nogil:
    return push_flat(c, c.regs[i.reg])

cdef int h_POP_r32_flat(Cpu* c, Insn* i) noexcept nogil:
    cdef uint32_t v
    if pop_flat(c, &v):
        return RC_FAULT
    c.regs[i.reg] = v
    return RC_NEXT

cdef int h_MOV_d_store(Cpu* c, Insn* i) noexcept nogil:
    """89 /r, memory destination, 32-bit, 32-bit address."""
    cdef uint32_t la
    if seg_off_w(c, i.seg, c.regs[i.rm] + (c.regs[i.index] << i.scale) + i.disp, 2, &la):
        return RC_FAULT
    return wr32(c, la, c.regs[i.reg])

cdef int h_MOV_moffs(Cpu* c, Insn* i) noexcept nogil:
    """A0-A3: op bit 1 = store; size index in i.imm2. Offset in disp."""
    cdef int sz = i.imm2
    cdef uint32_t la
    cdef uint32_t v
    if (seg_off_w(c, i.seg, i.disp, sz, &la) if i.op & 2 else seg_off(c, i.seg, i.disp, sz, &la)):
        return RC_FAULT
    if i.op & 2:
        return wr_sz(c, la, sz, getr_sz(c, R_EAX, sz))
    if rd_sz(c, la, sz, &v):
        return RC_FAULT
    setr_sz(c, R_EAX, sz, v)
    return RC_NEXT

cdef int h_XCHG(Cpu* c, Insn* i) noexcept nogil:
    """86/87 and 90+r (op = size index). Memory forms are always locked; harmless here."""
    cdef int sz = i.op
    cdef uint32_t a, la = 0
    cdef uint32_t b = getr_sz(c, i.reg, sz)
    if load_E_w(c, i, sz, &a, &la):
        return RC_FAULT
    if store_E(c, i, sz, b, la):
        return RC_FAULT
    setr_sz(c, i.reg, sz, a)
    return RC_NEXT

cdef int h_XLAT(Cpu* c, Insn* i) noexcept nogil:
    """D7: AL = [seg:EBX + AL]."""
    cdef uint32_t ea = c.regs[R_EBX] + (c.regs[R_EAX] & 0xFF)
    cdef uint32_t v
    cdef uint32_t la
    if i.flags & IF_A16:
        ea &= 0xFFFF
    if seg_off(c, i.seg, ea, 0, &la) or rd8(c, la, &v):
        return RC_FAULT
    setr8(c, R_EAX, v)
    return RC_NEXT

cdef int h_ENTER(Cpu* c, Insn* i) noexcept nogil:
    """C8 iw ib: imm = frame size, imm2 = nesting level (mod 32) (SDM ENTER)."""
    cdef int sz = opsz(i)
    cdef uint32_t level = i.imm2 & 31
    cdef uint32_t old_esp = c.regs[R_ESP]
    cdef uint32_t old_ebp = c.regs[R_EBP]
    cdef uint32_t frame, ebp, v, k, final_esp, la
    cdef uint32_t step = 2 if sz == 1 else 4
    if push(c, sz, old_ebp):
        return RC_FAULT
    frame = c.regs[R_ESP]
    if level > 0:
        ebp = old_ebp
        for k in range(1, level):
            ebp -= step
            if stack_read(c, ebp, sz, &v) or push(c, sz, v):
                c.regs[R_ESP] = old_esp
                return RC_FAULT
        if push(c, sz, frame):
            c.regs[R_ESP] = old_esp
            return RC_FAULT
    # the final stack pointer is checked as a write of the operand size there would be, without
    # writing (SDM ENTER: #SS(0), #PF "a write using the final value of the stack pointer")
    final_esp = sp_update(c, c.regs[R_ESP], c.regs[R_ESP] - i.imm)
    if seg_off_w(c, S_SS, final_esp & c.ss_mask, sz, &la) or probe_write(c, la, step):
        c.regs[R_ESP] = old_esp
        return RC_FAULT
    if sz == 1:
        setr16(c, R_EBP, frame)
    else:
        c.regs[R_EBP] = frame
    c.regs[R_ESP] = final_esp
    return RC_NEXT

cdef int h_LEAVE(Cpu* c, Insn* i) noexcept nogil:
    """C9: ESP = EBP; pop EBP."""
    cdef int sz = opsz(i)
    cdef uint32_t v
    cdef uint32_t ebp = c.regs[R_EBP]
    if stack_read(c, ebp, sz, &v):
        return RC_FAULT
    c.regs[R_ESP] = sp_update(c, c.regs[R_ESP], ebp + (2 if sz == 1 else 4))
    setr_sz(c, R_EBP, sz, v)
    return RC_NEXT

cdef int h_PUSH_SEG(Cpu* c, Insn* i) noexcept nogil:
    """06/0E/16/1E/0F A0/0F A8: op = segment."""
    return push(c, opsz(i), c.seg[i.op].sel)

cdef int h_MOV_E_SEG(Cpu* c, Insn* i) noexcept nogil:
    """8C: a register destination gets the selector zero-extended (32-bit operand)."""
    cdef uint32_t la
    if i.flags & IF_MEM:
        if seg_addr_w(c, i, 1, &la):
            return RC_FAULT
        return wr16(c, la, c.seg[i.reg].sel)
    setr_sz(c, i.rm, opsz(i), c.seg[i.reg].sel)
    return RC_NEXT

cdef int h_NOP(Cpu* c, Insn* i) noexcept nogil:
    return RC_NEXT
