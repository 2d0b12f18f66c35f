# Exception and interrupt delivery through the guest's IDT (SDM Vol. 3 §6.12),
# with the double-fault rules of Table 6-5 and the triple fault that ends the
# run. Delivery here covers CPL-0 flat protected mode: 32-bit interrupt and
# trap gates to a code segment at the same privilege.

cdef inline int exc_class(int vector) noexcept nogil:
    """0 benign, 1 contributory, 2 page fault (SDM Vol. 3 Table 6-4)."""
    if vector == EXC_PF:
        return 2
    if vector == EXC_DE or vector == EXC_TS or vector == EXC_NP or vector == EXC_SS or vector == EXC_GP:
        return 1
    return 0

cdef inline bint pushes_error_code(int vector) noexcept nogil:
    return vector == EXC_DF or (10 <= vector <= 14) or vector == 17

cdef int gate_fault(Cpu* c, int vector, int ext, uint32_t idt_fault) noexcept nogil:
    c.exc_vector = vector
    c.exc_has_err = 1
    c.exc_err = idt_fault
    return RC_FAULT

cdef int deliver_real(Cpu* c, int vector) noexcept nogil:
    """Real mode: through the interrupt vector table, FLAGS, CS, IP pushed, no error
    code (SDM Vol. 3 §20.1.4)."""
    cdef uint32_t ip, cs
    cdef uint32_t old_esp = c.regs[R_ESP]
    if <uint32_t>vector * 4 + 3 > c.idtr_limit:
        return gate_fault(c, EXC_GP, 0, 0)
    if rd16(c, c.idtr_base + vector * 4, &ip) or rd16(c, c.idtr_base + vector * 4 + 2, &cs):
        return RC_FAULT
    if push(c, 1, get_eflags(c)) or push(c, 1, c.seg[S_CS].sel) or push(c, 1, c.eip):
        c.regs[R_ESP] = old_esp
        return RC_FAULT
    c.eflags &= ~<uint32_t>(FL_IF | FL_TF | FL_AC)
    seg_load_real(c, S_CS, cs)
    c.eip = ip
    return 0

cdef int deliver_once(Cpu* c, int vector, bint has_err, uint32_t err, bint soft) noexcept nogil:
    """Push the frame and enter the handler; RC_FAULT with a new exception if that fails."""
    if not c.pe:
        return deliver_real(c, vector)
    if soft and (c.eflags & FL_VM) and ((c.eflags >> 12) & 3) < 3 and c.exc_soft_kind == 0:
        return fault_err(c, EXC_GP, 0)          # INT n in virtual-8086 mode is IOPL-sensitive
    return deliver_pm(c, vector, has_err, err, soft)

cdef int deliver_exception(Cpu* c) noexcept nogil:
    """Deliver cpu.exc_vector. Returns 1 if the run must end (triple fault)."""
    cdef int vector = c.exc_vector
    cdef bint has_err = c.exc_has_err
    cdef uint32_t err = c.exc_err
    cdef bint soft = c.exc_soft
    cdef int new_vector, first_class, new_class, rc
    c.exc_soft = 0
    c.n_exceptions += 1
    c.first_exc_vector = vector
    c.first_exc_has_err = has_err
    c.first_exc_err = err
    c.first_exc_eip = c.eip
    if not soft and not has_err and pushes_error_code(vector):
        has_err = 1
    if not c.pe:
        has_err = 0
    while True:
        rc = deliver_once(c, vector, has_err, err, soft)
        if rc == 0:
            return 0
        if rc == RC_EXIT_BEFORE:
            return 1
        if soft:
            # the INT did not complete: the new exception is a fault of the INT itself
            c.eip = c.exc_soft_start
            c.icount -= 1
        soft = 0
        new_vector = c.exc_vector
        if vector == EXC_DF:
            # a fault while delivering #DF: shutdown (SDM Vol. 3 §6.15, interrupt 8)
            c.exit_reason = EXIT_SHUTDOWN
            return 1
        first_class = exc_class(vector)
        new_class = exc_class(new_vector)
        if (first_class == 1 and new_class == 1) or (first_class == 2 and new_class != 0):
            vector = EXC_DF
            has_err = 1
            err = 0
        else:
            vector = new_vector
            has_err = c.exc_has_err or pushes_error_code(new_vector)
            err = c.exc_err
        if not c.pe:
            has_err = 0
