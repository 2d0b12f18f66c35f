# I/O, processor identification, time stamp, halt, and the handlers for opcodes
# that are undefined (#UD) or not implemented yet (an exit, never a guess).

cdef int h_IO(Cpu* c, Insn* i) noexcept nogil:
    """E4-E7 (port imm8), EC-EF (port DX). op bit 0: OUT; imm2 = size index.
    Device I/O is the monitor's: the engine exits and run() is resumed after it."""
    cdef int sz = i.imm2
    c.io_port = i.imm if i.op & 2 else (c.regs[R_EDX] & 0xFFFF)
    c.io_size = 1 << sz
    c.io_is_in = 0 if i.op & 1 else 1
    c.io_value = getr_sz(c, R_EAX, sz) if i.op & 1 else 0
    c.exit_reason = EXIT_IO
    return RC_EXIT

cdef int h_HLT(Cpu* c, Insn* i) noexcept nogil:
    """F4 (CPL 0)."""
    c.exit_reason = EXIT_HLT
    return RC_EXIT

cdef int h_CPUID(Cpu* c, Insn* i) noexcept nogil:
    """0F A2. What this engine implements, honestly: an i686-class integer CPU
    with TSC, CMPXCHG8B and CMOV, and no FPU yet (SDM Vol. 2 CPUID, leaf 1 EDX)."""
    cdef uint32_t leaf = c.regs[R_EAX]
    if leaf == 0:
        c.regs[R_EAX] = 1
        c.regs[R_EBX] = 0x756E6547   # "Genu"
        c.regs[R_EDX] = 0x49656E69   # "ineI"
        c.regs[R_ECX] = 0x6C65746E   # "ntel"
        return RC_NEXT
    # leaf 1, and any leaf above the maximum reports the highest basic leaf
    c.regs[R_EAX] = 0x00000611       # family 6, model 1, stepping 1
    c.regs[R_EBX] = 0
    c.regs[R_ECX] = 0
    c.regs[R_EDX] = (1 << 4) | (1 << 8) | (1 << 15)
    return RC_NEXT

cdef int h_RDTSC(Cpu* c, Insn* i) noexcept nogil:
    """0F 31: a virtual time stamp counter that counts guest instructions, so
    that runs are reproducible."""
    cdef uint64_t tsc = c.icount
    if c.cur_block != NULL:
        tsc += <uint64_t>(i - c.cur_block.insns)
    c.regs[R_EAX] = <uint32_t>tsc
    c.regs[R_EDX] = <uint32_t>(tsc >> 32)
    return RC_NEXT

cdef int h_UD(Cpu* c, Insn* i) noexcept nogil:
    """Undefined opcode: #UD (SDM Vol. 3 §6.15, interrupt 6)."""
    return fault(c, EXC_UD)

cdef int h_UNIMPLEMENTED(Cpu* c, Insn* i) noexcept nogil:
    """A valid instruction the engine does not implement yet: exit before it."""
    c.exit_reason = EXIT_UNIMPLEMENTED
    return RC_EXIT_BEFORE

cdef int h_INT(Cpu* c, Insn* i) noexcept nogil:
    """CD ib / CC INT3 / CE INTO (op 1: only if OF). Delivered like an exception
    whose saved EIP is the next instruction."""
    if i.op == 1 and not (compute_flags(c) & FL_OF):
        c.eip = i.next_eip
        return RC_BRANCH
    c.exc_vector = i.imm
    c.exc_has_err = 0
    c.exc_soft = 1
    return RC_FAULT
