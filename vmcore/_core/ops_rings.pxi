# Transfers between privilege levels (SDM Vol. 3 §5.8-5.9, §6.12): interrupts and
# exceptions through gates into an inner ring with the stack from the TSS, IRET and
# RETF to an outer ring, and far CALL/JMP through call gates.

cdef int tss_stack(Cpu* c, uint32_t dpl, uint32_t* ss, uint32_t* esp) noexcept nogil:
    """SS:ESP for ring dpl from the current TSS; #TS(TR selector) if beyond its limit."""
    cdef uint32_t rc
    if (c.tr.attr & 0x0F) == 0x0B or (c.tr.attr & 0x0F) == 0x09:
        if 8 * dpl + 11 > c.tr.limit:
            return fault_err(c, EXC_TS, c.tr.sel & 0xFFFC)
        rc = sys_rd32(c, c.tr.base + 4 + 8 * dpl, esp) or sys_rd16(c, c.tr.base + 8 + 8 * dpl, ss)
    else:
        if 4 * dpl + 5 > c.tr.limit:
            return fault_err(c, EXC_TS, c.tr.sel & 0xFFFC)
        rc = sys_rd16(c, c.tr.base + 2 + 4 * dpl, esp) or sys_rd16(c, c.tr.base + 4 + 4 * dpl, ss)
    return RC_FAULT if rc else 0

cdef int check_stack_desc(Cpu* c, uint32_t sel, uint32_t cpl, uint32_t* lo, uint32_t* hi,
                          int bad_vector) noexcept nogil:
    """A stack segment for ring cpl: RPL = DPL = cpl, writable data, present."""
    cdef uint32_t gla, typ
    if (sel & 0xFFFC) == 0:
        return fault_err(c, bad_vector, 0)
    if read_descriptor(c, sel, lo, hi, &gla):
        if c.exc_vector == EXC_GP:
            c.exc_vector = bad_vector
        return RC_FAULT
    typ = (hi[0] >> 8) & 0x1F
    if (sel & 3) != cpl or ((hi[0] >> 13) & 3) != cpl or (typ & 0x1A) != 0x12:
        return fault_err(c, bad_vector, sel & 0xFFFC)
    if not (hi[0] & 0x8000):
        return fault_err(c, EXC_SS, sel & 0xFFFC)
    return 0

cdef void load_ss_cache(Cpu* c, uint32_t sel, uint32_t lo, uint32_t hi) noexcept nogil:
    seg_from_descriptor(&c.seg[S_SS], sel, lo, hi)
    c.ss32 = 1 if hi & 0x400000 else 0
    c.ss_mask = 0xFFFFFFFFU if c.ss32 else 0xFFFF

cdef void null_outer_data_segs(Cpu* c) noexcept nogil:
    """After a return to an outer ring, data segments the new CPL may not use are
    nulled (SDM Vol. 2 IRET/RET, "FOR each of segment register ES, FS, GS, DS")."""
    cdef int k
    cdef uint32_t attr, dpl
    for k in range(6):
        if k == S_CS or k == S_SS:
            continue
        attr = c.seg[k].attr
        dpl = (attr >> 5) & 3
        if (attr & 0x10) and ((attr & 0x0C) != 0x0C) and dpl < c.cpl:
            c.seg[k].sel = 0
            seg_make_unusable(&c.seg[k])

cdef int enter_code(Cpu* c, uint32_t sel, uint32_t lo, uint32_t hi, uint32_t cpl, uint32_t eip) noexcept nogil:
    seg_from_descriptor(&c.seg[S_CS], (sel & 0xFFFC) | cpl, lo, hi)
    c.code32 = 1 if hi & 0x400000 else 0
    set_cpl(c, cpl)
    c.eip = eip if c.code32 else eip & 0xFFFF
    return 0

cdef int check_code_desc(Cpu* c, uint32_t sel, uint32_t* lo, uint32_t* hi, int bad_vector,
                         uint32_t err) noexcept nogil:
    cdef uint32_t gla
    if (sel & 0xFFFC) == 0:
        return fault_err(c, bad_vector, err)
    if read_descriptor(c, sel, lo, hi, &gla):
        return RC_FAULT
    if (hi[0] & 0x1800) != 0x1800:
        return fault_err(c, bad_vector, sel & 0xFFFC)
    if not (hi[0] & 0x8000):
        return fault_err(c, EXC_NP, sel & 0xFFFC)
    return 0

cdef int deliver_pm(Cpu* c, int vector, bint has_err, uint32_t err, bint soft) noexcept nogil:
    """Protected mode: through an interrupt or trap gate, switching to the handler's
    ring's stack from the TSS when it is more privileged (SDM Vol. 3 §6.12.1)."""
    cdef uint32_t ext = 0 if soft else 1
    cdef uint32_t idt_err = <uint32_t>vector * 8 + 2 + ext
    cdef uint32_t glo, ghi, typ, sel, offset, clo, chi, dpl, old_cpl = c.cpl
    cdef uint32_t new_ss, new_esp, slo, shi, old_ss, old_esp, eflags, rc
    cdef int sz
    cdef Seg saved_ss
    cdef uint32_t saved_ss32, saved_mask
    saved_ss = c.seg[S_SS]
    saved_ss32 = c.ss32
    saved_mask = c.ss_mask
    if <uint32_t>vector * 8 + 7 > c.idtr_limit:
        return fault_err(c, EXC_GP, idt_err)
    rc = sys_rd32(c, c.idtr_base + vector * 8, &glo) or sys_rd32(c, c.idtr_base + vector * 8 + 4, &ghi)
    if rc:
        return RC_FAULT
    typ = (ghi >> 8) & 0x1F
    if typ == 0x05:
        # a task gate: the handler is a task (SDM Vol. 3 §6.12.2)
        if soft and ((ghi >> 13) & 3) < c.cpl:
            return fault_err(c, EXC_GP, idt_err)
        if not (ghi & 0x8000):
            return fault_err(c, EXC_NP, idt_err)
        return task_switch(c, glo >> 16, TS_CALL, c.eip, has_err, err)
    if typ != 0x0E and typ != 0x0F and typ != 0x06 and typ != 0x07:
        return fault_err(c, EXC_GP, idt_err)
    if soft and c.exc_soft_kind != 2 and ((ghi >> 13) & 3) < c.cpl:
        return fault_err(c, EXC_GP, idt_err)     # INT n needs gate DPL >= CPL
    if not (ghi & 0x8000):
        return fault_err(c, EXC_NP, idt_err)
    sz = 2 if typ & 0x08 else 1
    sel = glo >> 16
    offset = (glo & 0xFFFF) | ((ghi & 0xFFFF0000U) if sz == 2 else 0)
    if check_code_desc(c, sel, &clo, &chi, EXC_GP, ext):
        return RC_FAULT
    dpl = (chi >> 13) & 3
    if dpl > c.cpl:
        return fault_err(c, EXC_GP, (sel & 0xFFFC) + ext)
    if c.eflags & FL_VM:
        return v86_to_ring0(c, sel, offset, clo, chi, typ, has_err, err)
    eflags = get_eflags(c)
    old_ss = c.seg[S_SS].sel
    old_esp = c.regs[R_ESP]
    if not (chi & 0x400) and dpl < c.cpl:
        # inner ring: the new stack comes from the TSS
        if tss_stack(c, dpl, &new_ss, &new_esp):
            return RC_FAULT
        if check_stack_desc(c, new_ss, dpl, &slo, &shi, EXC_TS):
            return RC_FAULT
        load_ss_cache(c, new_ss, slo, shi)
        # a 16-bit inner stack takes SP from the TSS; ESP's high word is left alone (SDM Vol. 1
        # §6.2.3: SS.B = 0 uses SP; Bochs and QEMU agree)
        c.regs[R_ESP] = sp_update(c, old_esp, new_esp)
        # the frame goes onto the inner stack with the inner ring's rights
        set_cpl(c, dpl)
        if push(c, sz, old_ss) or push(c, sz, old_esp):
            set_cpl(c, old_cpl)
            c.seg[S_SS] = saved_ss
            c.ss32 = saved_ss32
            c.ss_mask = saved_mask
            c.regs[R_ESP] = old_esp
            return RC_FAULT
    else:
        dpl = c.cpl
    if push(c, sz, eflags) or push(c, sz, c.seg[S_CS].sel) or push(c, sz, c.eip) or \
            (has_err and push(c, sz, err)):
        if dpl != old_cpl:
            set_cpl(c, old_cpl)
            c.seg[S_SS] = saved_ss
            c.ss32 = saved_ss32
            c.ss_mask = saved_mask
        c.regs[R_ESP] = old_esp
        return RC_FAULT
    c.eflags &= ~<uint32_t>(FL_TF | FL_NT | FL_RF | FL_VM)
    if not (typ & 1):
        c.eflags &= ~<uint32_t>FL_IF
    enter_code(c, sel, clo, chi, dpl, offset)
    return 0

cdef int return_outer(Cpu* c, uint32_t esp_after, int sz, uint32_t cs_sel, uint32_t eip,
                      uint32_t clo, uint32_t chi, uint32_t release) noexcept nogil:
    """The tail of IRET and RETF to an outer ring: ESP and SS follow at esp_after."""
    cdef uint32_t step = 2 if sz == 1 else 4
    cdef uint32_t new_esp, new_ss, slo, shi
    cdef uint32_t rpl = cs_sel & 3
    if stack_read(c, esp_after, sz, &new_esp) or stack_read(c, esp_after + step, sz, &new_ss):
        return RC_FAULT
    if check_stack_desc(c, new_ss & 0xFFFF, rpl, &slo, &shi, EXC_GP):
        return RC_FAULT
    enter_code(c, cs_sel, clo, chi, rpl, eip)
    load_ss_cache(c, new_ss & 0xFFFF, slo, shi)
    # the popped (zero-extended) ESP plus the released bytes, by the new SS's B bit: a 16-bit
    # outer stack gets SP only and ESP's high word stays the inner one's, whatever the operand
    # size (SDM Vol. 2 RET/IRET "SP <- SP + SRC"; the high-word leak Linux's espfix hides)
    new_esp += release
    c.regs[R_ESP] = sp_update(c, c.regs[R_ESP], new_esp)
    null_outer_data_segs(c)
    return 0

cdef int call_gate(Cpu* c, Insn* i, uint32_t gate_sel, uint32_t glo, uint32_t ghi, bint is_call) noexcept nogil:
    """Far CALL/JMP through a call gate (SDM Vol. 3 §5.8.4-5.8.5)."""
    cdef int sz = 2 if ((ghi >> 8) & 0x1F) == 0x0C else 1
    cdef uint32_t sel = glo >> 16
    cdef uint32_t offset = (glo & 0xFFFF) | ((ghi & 0xFFFF0000U) if sz == 2 else 0)
    cdef uint32_t nparams = ghi & 0x1F
    cdef uint32_t gdpl = (ghi >> 13) & 3
    cdef uint32_t clo, chi, dpl, new_ss, new_esp, slo, shi, k, v
    cdef uint32_t old_ss = c.seg[S_SS].sel, old_esp = c.regs[R_ESP], old_cs = c.seg[S_CS].sel
    cdef uint32_t params[32]
    cdef uint32_t step = 2 if sz == 1 else 4
    cdef Seg saved_ss
    cdef uint32_t saved_ss32, saved_mask, old_cpl
    cdef int rc
    if gdpl < c.cpl or gdpl < (gate_sel & 3):
        return fault_err(c, EXC_GP, gate_sel & 0xFFFC)
    if not (ghi & 0x8000):
        return fault_err(c, EXC_NP, gate_sel & 0xFFFC)
    if check_code_desc(c, sel, &clo, &chi, EXC_GP, 0):
        return RC_FAULT
    dpl = (chi >> 13) & 3
    if dpl > c.cpl or (not is_call and not (chi & 0x400) and dpl != c.cpl):
        return fault_err(c, EXC_GP, sel & 0xFFFC)
    if is_call and not (chi & 0x400) and dpl < c.cpl:
        for k in range(nparams):
            if stack_read(c, old_esp + step * k, sz, &params[k]):
                return RC_FAULT
        if tss_stack(c, dpl, &new_ss, &new_esp):
            return RC_FAULT
        if check_stack_desc(c, new_ss, dpl, &slo, &shi, EXC_TS):
            return RC_FAULT
        saved_ss = c.seg[S_SS]
        saved_ss32 = c.ss32
        saved_mask = c.ss_mask
        old_cpl = c.cpl
        load_ss_cache(c, new_ss, slo, shi)
        c.regs[R_ESP] = sp_update(c, old_esp, new_esp)    # as deliver_pm
        set_cpl(c, dpl)                 # the new stack is written with the inner ring's rights
        rc = push(c, sz, old_ss) or push(c, sz, old_esp)
        k = nparams
        while k > 0 and not rc:
            k -= 1
            rc = push(c, sz, params[k])
        if rc or push(c, sz, old_cs) or push(c, sz, i.next_eip):
            set_cpl(c, old_cpl)
            c.seg[S_SS] = saved_ss
            c.ss32 = saved_ss32
            c.ss_mask = saved_mask
            c.regs[R_ESP] = old_esp
            return RC_FAULT
        enter_code(c, sel, clo, chi, dpl, offset)
        return RC_BRANCH
    if is_call and (push(c, sz, old_cs) or push(c, sz, i.next_eip)):
        c.regs[R_ESP] = old_esp
        return RC_FAULT
    enter_code(c, sel, clo, chi, c.cpl, offset)
    return RC_BRANCH
