# Hardware task switching through 32-bit TSSs (SDM Vol. 3 §7.3) and virtual-8086
# mode entry and exit (SDM Vol. 3 §20.2-20.3).

cdef enum:
    TS_JMP = 0
    TS_CALL = 1         # CALL, INT n, exceptions, interrupts: nesting (NT, back link)
    TS_IRET = 2

cdef inline int tss_rd(Cpu* c, uint32_t base, uint32_t off, uint32_t* v) noexcept nogil:
    return sys_rd32(c, base + off, v)

cdef inline int tss_wr(Cpu* c, uint32_t base, uint32_t off, uint32_t v) noexcept nogil:
    return sys_wr32(c, base + off, v)

cdef int set_busy(Cpu* c, uint32_t sel, bint busy) noexcept nogil:
    cdef uint32_t gla = c.gdtr_base + (sel & 0xFFF8)
    cdef uint32_t hi
    if tss_rd(c, gla, 4, &hi):
        return RC_FAULT
    hi = (hi | 0x200) if busy else (hi & ~<uint32_t>0x200)
    return tss_wr(c, gla, 4, hi)

cdef int load_seg_after_switch(Cpu* c, int idx, uint32_t sel) noexcept nogil:
    """Segment loads of the new task; their faults are #TS(selector) (SDM Vol. 3 §7.3 step 13)."""
    cdef uint32_t lo, hi, gla
    if c.eflags & FL_VM:
        seg_load_real(c, idx, sel)
        c.seg[idx].limit = 0xFFFF
        seg_set_limits(&c.seg[idx], True)
        return 0
    if idx == S_CS:
        if check_code_desc(c, sel, &lo, &hi, EXC_TS, sel & 0xFFFC):
            if c.exc_vector == EXC_GP:
                c.exc_vector = EXC_TS
            return RC_FAULT
        enter_code(c, sel, lo, hi, sel & 3, c.eip)
        return 0
    if seg_load(c, idx, sel):
        if c.exc_vector == EXC_GP:
            c.exc_vector = EXC_TS
            c.exc_err = sel & 0xFFFC
        return RC_FAULT
    return 0

cdef int task_switch(Cpu* c, uint32_t sel, int kind, uint32_t next_eip, bint has_err, uint32_t err) noexcept nogil:
    """Switch to the task whose TSS selector is sel. next_eip is what the old task
    resumes at. Returns 0, or RC_FAULT with the exception to deliver."""
    cdef uint32_t lo, hi, gla, typ, old_base = c.tr.base, old_sel = c.tr.sel
    cdef uint32_t nb, v, k, eflags, new_cr3, ldt_sel
    cdef uint32_t vals[8]
    cdef uint32_t segs[6]
    if sel & 4:
        return fault_err(c, EXC_GP, sel & 0xFFFC)
    if read_descriptor(c, sel, &lo, &hi, &gla):
        return RC_FAULT
    typ = (hi >> 8) & 0x1F
    if kind == TS_IRET:
        if typ != 0x0B:
            return fault_err(c, EXC_TS, sel & 0xFFFC)
    elif typ != 0x09:
        if typ == 0x01 or typ == 0x03:
            c.exit_reason = EXIT_UNIMPLEMENTED          # 16-bit TSS
            return RC_EXIT_BEFORE
        return fault_err(c, EXC_GP, sel & 0xFFFC)
    if not (hi & 0x8000):
        return fault_err(c, EXC_NP, sel & 0xFFFC)
    if ((lo & 0xFFFF) | (hi & 0xF0000)) < 0x67 and not (hi & 0x800000):
        return fault_err(c, EXC_TS, sel & 0xFFFC)
    # save the outgoing task (SDM Vol. 3 §7.3 step 8)
    eflags = get_eflags(c)
    if kind == TS_IRET:
        eflags &= ~<uint32_t>FL_NT
    if tss_wr(c, old_base, 0x20, next_eip) or tss_wr(c, old_base, 0x24, eflags):
        return RC_FAULT
    for k in range(8):
        if tss_wr(c, old_base, 0x28 + 4 * k, c.regs[k]):
            return RC_FAULT
    for k in range(6):
        if tss_wr(c, old_base, 0x48 + 4 * k, c.seg[k].sel):
            return RC_FAULT
    if kind != TS_CALL and set_busy(c, old_sel, False):
        return RC_FAULT
    # read the incoming task
    nb = (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000U)
    for k in range(8):
        if tss_rd(c, nb, 0x28 + 4 * k, &vals[k]):
            return RC_FAULT
    for k in range(6):
        if tss_rd(c, nb, 0x48 + 4 * k, &segs[k]):
            return RC_FAULT
    if tss_rd(c, nb, 0x1C, &new_cr3) or tss_rd(c, nb, 0x20, &v) or tss_rd(c, nb, 0x24, &eflags) \
            or tss_rd(c, nb, 0x60, &ldt_sel):
        return RC_FAULT
    if kind == TS_CALL:
        if tss_wr(c, nb, 0, old_sel):
            return RC_FAULT
        eflags |= FL_NT
    if kind != TS_IRET and set_busy(c, sel, True):
        return RC_FAULT
    # commit: TR, CR0.TS, CR3, registers, flags (SDM Vol. 3 §7.3 steps 10-12)
    seg_from_descriptor(&c.tr, sel, lo, hi | (0x200 if kind != TS_IRET else 0))
    c.cr0 |= CR0_TS
    if c.cr0 & CR0_PG:
        load_cr3(c, new_cr3)        # and the monitor's shadow with it
    for k in range(8):
        c.regs[k] = vals[k]
    c.eip = v
    c.eflags = (eflags & ~<uint32_t>FL_ARITH) | FL_FIXED1
    set_arith_flags(c, eflags)
    # LDT, then the segment registers; faults here belong to the new task
    ldt_sel &= 0xFFFF
    if (ldt_sel & 0xFFFC) == 0:
        c.ldtr.sel = <uint16_t>ldt_sel
        c.ldtr.limit = 0
    else:
        if (ldt_sel & 4) or read_descriptor(c, ldt_sel, &lo, &hi, &gla) or ((hi >> 8) & 0x1F) != 0x02:
            return fault_err(c, EXC_TS, ldt_sel & 0xFFFC)
        seg_from_descriptor(&c.ldtr, ldt_sel, lo, hi)
    if eflags & FL_VM:
        set_cpl(c, 3)
    else:
        set_cpl(c, segs[S_CS] & 3)
    if load_seg_after_switch(c, S_CS, segs[S_CS] & 0xFFFF):
        return RC_FAULT
    if eflags & FL_VM:
        c.code32 = 0
    for k in range(6):
        if k != S_CS and load_seg_after_switch(c, k, segs[k] & 0xFFFF):
            return RC_FAULT
    # the error code is a dword from a 32-bit TSS, whatever the new SS's size (SDM Vol. 3 §6.12.2)
    if has_err and push(c, 2, err):
        return RC_FAULT
    return 0

cdef int h_IRET_task(Cpu* c, Insn* i) noexcept nogil:
    """IRET with NT = 1 in protected mode: return to the task in the back link."""
    cdef uint32_t back
    if tss_rd(c, c.tr.base, 0, &back):
        return RC_FAULT
    if task_switch(c, back & 0xFFFF, TS_IRET, i.next_eip, False, 0):
        return RC_EXIT_BEFORE if c.exit_reason == EXIT_UNIMPLEMENTED else RC_FAULT
    return RC_BRANCH

cdef int enter_v86(Cpu* c, Insn* i, uint32_t esp, uint32_t off, uint32_t sel, uint32_t fl) noexcept nogil:
    """IRET at CPL 0 with VM = 1 in the popped EFLAGS (SDM Vol. 2 IRET, RETURN-TO-VIRTUAL-8086-MODE)."""
    cdef uint32_t v[6]
    cdef int k
    for k in range(6):          # ESP SS ES DS FS GS after EIP CS EFLAGS
        if stack_read(c, esp + 12 + 4 * k, 2, &v[k]):
            return RC_FAULT
    c.eflags = (fl & ~<uint32_t>FL_ARITH & 0x003F7FD5) | FL_FIXED1 | FL_VM
    set_arith_flags(c, fl)
    set_cpl(c, 3)
    seg_load_real(c, S_CS, sel)
    c.code32 = 0
    seg_load_real(c, S_SS, v[1])
    seg_load_real(c, S_ES, v[2])
    seg_load_real(c, S_DS, v[3])
    seg_load_real(c, S_FS, v[4])
    seg_load_real(c, S_GS, v[5])
    c.regs[R_ESP] = v[0]
    c.eip = off & 0xFFFF
    return RC_BRANCH

cdef int v86_to_ring0(Cpu* c, uint32_t sel, uint32_t offset, uint32_t clo, uint32_t chi, uint32_t typ,
                      bint has_err, uint32_t err) noexcept nogil:
    """An interrupt or exception leaving virtual-8086 mode for a ring-0 handler: the
    data segment registers are saved on the ring-0 stack and nulled (SDM Vol. 3 §20.3.1.1)."""
    cdef uint32_t new_ss, new_esp, slo, shi, k
    cdef uint32_t eflags = get_eflags(c)
    cdef uint32_t old[6]
    cdef uint32_t old_esp = c.regs[R_ESP]
    if ((chi >> 13) & 3) != 0 or (chi & 0x400):
        return fault_err(c, EXC_GP, sel & 0xFFFC)
    if tss_stack(c, 0, &new_ss, &new_esp):
        return RC_FAULT
    if check_stack_desc(c, new_ss, 0, &slo, &shi, EXC_TS):
        return RC_FAULT
    cdef int sz = 2 if typ & 0x08 else 1      # 16-bit gates push words (SDM Vol. 2 INT, FROM-V86)
    cdef Seg saved_ss = c.seg[S_SS]
    cdef uint32_t saved_ss32 = c.ss32, saved_mask = c.ss_mask, saved_eflags = c.eflags
    for k in range(6):
        old[k] = c.seg[k].sel
    c.eflags &= ~<uint32_t>FL_VM
    set_cpl(c, 0)
    load_ss_cache(c, new_ss, slo, shi)
    # a 16-bit ring-0 stack takes SP only; ESP's high word stays (as deliver_pm)
    c.regs[R_ESP] = sp_update(c, old_esp, new_esp)
    if push(c, sz, old[S_GS]) or push(c, sz, old[S_FS]) or push(c, sz, old[S_DS]) or push(c, sz, old[S_ES]) \
            or push(c, sz, old[S_SS]) or push(c, sz, old_esp) or push(c, sz, eflags) or push(c, sz, old[S_CS]) \
            or push(c, sz, c.eip) or (has_err and push(c, sz, err)):
        # the fault is taken in the state the interrupt found (virtual-8086 mode, CPL 3)
        c.eflags = saved_eflags
        set_cpl(c, 3)
        c.seg[S_SS] = saved_ss
        c.ss32 = saved_ss32
        c.ss_mask = saved_mask
        c.regs[R_ESP] = old_esp
        return RC_FAULT
    for k in range(6):
        if k != S_CS and k != S_SS:
            c.seg[k].sel = 0
            seg_make_unusable(&c.seg[k])
    c.eflags &= ~<uint32_t>(FL_TF | FL_NT | FL_RF)
    if not (typ & 1):
        c.eflags &= ~<uint32_t>FL_IF
    enter_code(c, sel, clo, chi, 0, offset)
    return 0
