# Segment registers and far control transfer: MOV/POP Sreg, LDS/LES/LSS/LFS/LGS,
# far JMP/CALL/RET, IRET, BOUND, and string I/O. Real mode and virtual-8086 mode
# load base = selector * 16 (SDM Vol. 3 §20.1.1); protected mode loads the
# descriptor with the checks of SDM Vol. 2 "MOV" and Vol. 3 §5.4-5.8. Transfers
# that change privilege or go through gates belong to the system-architecture
# work and exit as unimplemented rather than being guessed at.

cdef inline void seg_load_real(Cpu* c, int idx, uint32_t sel) noexcept nogil:
    cdef Seg* s = &c.seg[idx]
    s.sel = <uint16_t>sel
    s.base = (sel & 0xFFFF) << 4
    if c.eflags & FL_VM:
        s.limit = 0xFFFF
        s.attr = 0x00F3 if idx != S_CS else 0x00FB
    seg_set_limits(s, True)
    if idx == S_SS:
        c.ss32 = 0
        c.ss_mask = 0xFFFF
    elif idx == S_CS:
        c.code32 = 0

cdef int read_descriptor(Cpu* c, uint32_t sel, uint32_t* lo, uint32_t* hi, uint32_t* gla) noexcept nogil:
    """The 8-byte descriptor named by sel from the GDT or LDT; #GP(sel) beyond the table."""
    cdef uint32_t base = c.ldtr.base if sel & 4 else c.gdtr_base
    cdef uint32_t limit = c.ldtr.limit if sel & 4 else c.gdtr_limit
    cdef int rc
    if (sel & 4) and (c.ldtr.sel & 0xFFFC) == 0:
        return fault_err(c, EXC_GP, sel & 0xFFFC)
    if (sel | 7) > limit:
        return fault_err(c, EXC_GP, sel & 0xFFFC)
    gla[0] = base + (sel & 0xFFF8)
    rc = sys_rd32(c, gla[0], lo) or sys_rd32(c, gla[0] + 4, hi)
    if rc:
        return RC_FAULT
    compress_descriptor(c, hi)
    return 0

cdef void seg_from_descriptor(Seg* s, uint32_t sel, uint32_t lo, uint32_t hi) noexcept nogil:
    s.sel = <uint16_t>sel
    s.base = (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000U)
    s.limit = (lo & 0xFFFF) | (hi & 0xF0000)
    if hi & 0x800000:
        s.limit = (s.limit << 12) | 0xFFF
    s.attr = <uint16_t>((hi >> 8) & 0xF0FF)
    seg_set_limits(s, False)

cdef int seg_load_pm(Cpu* c, int idx, uint32_t sel) noexcept nogil:
    """Data and stack segment loads in protected mode (SDM Vol. 2 MOV, "Operation")."""
    cdef uint32_t lo, hi, gla, dpl, rpl = sel & 3
    cdef uint32_t typ
    cdef Seg* s = &c.seg[idx]
    if (sel & 0xFFFC) == 0:
        if idx == S_SS:
            return fault_err(c, EXC_GP, 0)
        # a null selector loads an unusable segment: any access faults
        s.sel = <uint16_t>sel
        s.base = 0
        s.limit = 0
        s.attr = 0
        seg_make_unusable(s)
        return 0
    if read_descriptor(c, sel, &lo, &hi, &gla):
        return RC_FAULT
    typ = (hi >> 8) & 0x1F
    dpl = (hi >> 13) & 3
    if idx == S_SS:
        # writable data, RPL = CPL = DPL
        if (typ & 0x1A) != 0x12 or rpl != c.cpl or dpl != c.cpl:
            return fault_err(c, EXC_GP, sel & 0xFFFC)
        if not (hi & 0x8000):
            return fault_err(c, EXC_SS, sel & 0xFFFC)
    else:
        # data, or readable code; privilege unless conforming code
        if (typ & 0x10) == 0 or (typ & 0x1A) == 0x18:
            return fault_err(c, EXC_GP, sel & 0xFFFC)
        if (typ & 0x1C) != 0x1C and (rpl > dpl or c.cpl > dpl):
            return fault_err(c, EXC_GP, sel & 0xFFFC)
        if not (hi & 0x8000):
            return fault_err(c, EXC_NP, sel & 0xFFFC)
    if not (hi & 0x100):
        hi |= 0x100                     # accessed (in the guest's descriptor, uncompressed)
        if sys_wr32(c, gla + 4, hi & ~c.desc_adj):
            return RC_FAULT
    seg_from_descriptor(s, sel, lo, hi)
    if idx == S_SS:
        c.ss32 = 1 if hi & 0x400000 else 0
        c.ss_mask = 0xFFFFFFFFU if c.ss32 else 0xFFFF
    return 0

cdef int seg_load(Cpu* c, int idx, uint32_t sel) noexcept nogil:
    sel &= 0xFFFF
    if not c.pe or (c.eflags & FL_VM):
        seg_load_real(c, idx, sel)
        return 0
    return seg_load_pm(c, idx, sel)

cdef int h_MOV_SEG_E(Cpu* c, Insn* i) noexcept nogil:
    """8E /r: MOV Sreg, Ew (CS is #UD, decided at decode)."""
    cdef uint32_t v, la = 0
    if load_E(c, i, 1, &v, &la):
        return RC_FAULT
    if seg_load(c, i.reg, v):
        return RC_FAULT
    if i.reg == S_SS:
        c.int_shadow = 1
        c.attention = 1
    c.eip = i.next_eip        # the mode key may have changed (SS.B)
    return RC_BRANCH

cdef int h_POP_SEG(Cpu* c, Insn* i) noexcept nogil:
    """07/17/1F/0F A1/0F A9: op = segment."""
    cdef int sz = opsz(i)
    cdef uint32_t v
    cdef uint32_t esp = c.regs[R_ESP]
    cdef uint32_t mask = c.ss_mask
    if pop(c, sz, &v):
        return RC_FAULT
    if seg_load(c, i.op, v & 0xFFFF):
        return RC_FAULT
    # the increment uses the stack size before POP SS loaded a new one (SDM Vol. 2 POP:
    # StackAddrSize is that of the SS the value was read through)
    c.regs[R_ESP] = (esp & ~mask) | ((esp + (2 if sz == 1 else 4)) & mask)
    if i.op == S_SS:
        c.int_shadow = 1
        c.attention = 1
    c.eip = i.next_eip
    return RC_BRANCH

cdef int h_LxS(Cpu* c, Insn* i) noexcept nogil:
    """C4 LES, C5 LDS, 0F B2 LSS, 0F B4 LFS, 0F B5 LGS: Gv, Mp; op = segment."""
    cdef int sz = opsz(i)
    cdef uint32_t ea = ea_of(c, i)
    cdef uint32_t la, off, sel
    if seg_off(c, i.seg, ea, sz, &la) or rd_sz(c, la, sz, &off):
        return RC_FAULT
    if seg_off(c, i.seg, ea + (2 if sz == 1 else 4), 1, &la) or rd16(c, la, &sel):
        return RC_FAULT
    if seg_load(c, i.op, sel):
        return RC_FAULT
    setr_sz(c, i.reg, sz, off)
    c.eip = i.next_eip
    return RC_BRANCH

cdef int far_transfer(Cpu* c, Insn* i, uint32_t sel, uint32_t off, int sz, bint is_call) noexcept nogil:
    """Far JMP/CALL to sel:off with operand size sz (SDM Vol. 2 "JMP", "CALL")."""
    cdef uint32_t old_cs = c.seg[S_CS].sel
    cdef uint32_t old_esp = c.regs[R_ESP]
    cdef uint32_t lo, hi, gla, typ, dpl
    if sz == 1:
        off &= 0xFFFF
    if not c.pe or (c.eflags & FL_VM):
        if is_call and (push(c, sz, old_cs) or push(c, sz, i.next_eip)):
            c.regs[R_ESP] = old_esp
            return RC_FAULT
        seg_load_real(c, S_CS, sel)
        if c.eflags & FL_VM:
            c.code32 = 0
        c.eip = off
        return RC_BRANCH
    if (sel & 0xFFFC) == 0:
        return fault_err(c, EXC_GP, 0)
    if read_descriptor(c, sel, &lo, &hi, &gla):
        return RC_FAULT
    typ = (hi >> 8) & 0x1F
    dpl = (hi >> 13) & 3
    if typ == 0x0C or typ == 0x04:
        return call_gate(c, i, sel, lo, hi, is_call)
    if (typ & 0x18) != 0x18:
        if typ == 0x09 or typ == 0x05 or typ == 0x01:
            # a TSS, or a task gate naming one: a task switch (SDM Vol. 3 §7.3)
            if dpl < c.cpl or dpl < (sel & 3):
                return fault_err(c, EXC_GP, sel & 0xFFFC)
            if typ == 0x05:
                if not (hi & 0x8000):
                    return fault_err(c, EXC_NP, sel & 0xFFFC)
                sel = lo >> 16
            if task_switch(c, sel, TS_CALL if is_call else TS_JMP, i.next_eip, False, 0):
                return RC_EXIT_BEFORE if c.exit_reason == EXIT_UNIMPLEMENTED else RC_FAULT
            return RC_BRANCH
        return fault_err(c, EXC_GP, sel & 0xFFFC)
    if typ & 0x04:
        if dpl > c.cpl:
            return fault_err(c, EXC_GP, sel & 0xFFFC)
    elif (sel & 3) > c.cpl or dpl != c.cpl:
        return fault_err(c, EXC_GP, sel & 0xFFFC)
    if not (hi & 0x8000):
        return fault_err(c, EXC_NP, sel & 0xFFFC)
    if is_call and (push(c, sz, old_cs) or push(c, sz, i.next_eip)):
        c.regs[R_ESP] = old_esp
        return RC_FAULT
    seg_from_descriptor(&c.seg[S_CS], (sel & 0xFFFC) | c.cpl, lo, hi)
    c.code32 = 1 if hi & 0x400000 else 0
    c.eip = off
    return RC_BRANCH

cdef int h_FAR_ptr(Cpu* c, Insn* i) noexcept nogil:
    """EA JMP ptr16:16/32, 9A CALL ptr16:16/32 (op 1)."""
    return far_transfer(c, i, i.imm2, i.imm, opsz(i), i.op)

cdef int h_FAR_mem(Cpu* c, Insn* i) noexcept nogil:
    """FF /3 CALL m16:16/32 (op 1), FF /5 JMP m16:16/32."""
    cdef int sz = opsz(i)
    cdef uint32_t ea = ea_of(c, i)
    cdef uint32_t la, off, sel
    if seg_off(c, i.seg, ea, sz, &la) or rd_sz(c, la, sz, &off):
        return RC_FAULT
    if seg_off(c, i.seg, ea + (2 if sz == 1 else 4), 1, &la) or rd16(c, la, &sel):
        return RC_FAULT
    return far_transfer(c, i, sel, off, sz, i.op)

cdef int h_RETF(Cpu* c, Insn* i) noexcept nogil:
    """CB / CA iw: pop EIP, CS; release imm bytes."""
    cdef int sz = opsz(i)
    cdef uint32_t step = 2 if sz == 1 else 4
    cdef uint32_t off, sel, lo, hi, gla, typ, dpl
    cdef uint32_t esp = c.regs[R_ESP]
    if stack_read(c, esp, sz, &off) or stack_read(c, esp + step, sz, &sel):
        return RC_FAULT
    sel &= 0xFFFF
    if c.pe and not (c.eflags & FL_VM):
        if (sel & 3) < c.cpl:
            return fault_err(c, EXC_GP, sel & 0xFFFC)
        if (sel & 0xFFFC) == 0:
            return fault_err(c, EXC_GP, 0)
        if read_descriptor(c, sel, &lo, &hi, &gla):
            return RC_FAULT
        typ = (hi >> 8) & 0x1F
        dpl = (hi >> 13) & 3
        if (typ & 0x18) != 0x18 or ((typ & 0x04) and dpl > (sel & 3)) or (not (typ & 0x04) and dpl != (sel & 3)):
            return fault_err(c, EXC_GP, sel & 0xFFFC)
        if not (hi & 0x8000):
            return fault_err(c, EXC_NP, sel & 0xFFFC)
        if (sel & 3) > c.cpl:
            # to an outer ring: ESP and SS follow the return address and the released bytes
            if return_outer(c, esp + 2 * step + i.imm, sz, sel, off, lo, hi, i.imm):
                return RC_FAULT
            return RC_BRANCH
        seg_from_descriptor(&c.seg[S_CS], sel, lo, hi)
        c.code32 = 1 if hi & 0x400000 else 0
    else:
        seg_load_real(c, S_CS, sel)
    c.regs[R_ESP] = sp_update(c, esp, esp + 2 * step + i.imm)
    c.eip = off & 0xFFFF if sz == 1 else off
    return RC_BRANCH

cdef int h_IRET(Cpu* c, Insn* i) noexcept nogil:
    """CF: real mode (SDM Vol. 2 IRET, real-address mode) and protected mode at the same
    privilege level; task returns, outer-ring and virtual-8086 returns exit as unimplemented."""
    cdef int sz = opsz(i)
    cdef uint32_t step = 2 if sz == 1 else 4
    cdef uint32_t off, sel, fl, lo, hi, gla, typ, dpl, mask
    cdef uint32_t esp = c.regs[R_ESP]
    if c.pe and (c.eflags & FL_VM):
        # virtual-8086 mode: IOPL-sensitive (SDM Vol. 3 §20.2.7); with IOPL 3 a real-mode IRET
        if ((c.eflags >> 12) & 3) < 3:
            return fault_err(c, EXC_GP, 0)
        if stack_read(c, esp, sz, &off) or stack_read(c, esp + step, sz, &sel) or \
                stack_read(c, esp + 2 * step, sz, &fl):
            return RC_FAULT
        seg_load_real(c, S_CS, sel & 0xFFFF)
        c.code32 = 0
        set_eflags(c, fl, (FL_ARITH | FL_TF | FL_IF | FL_DF | FL_NT | FL_AC | FL_ID) & (0xFFFF if sz == 1 else 0xFFFFFFFFU))
        c.regs[R_ESP] = sp_update(c, esp, esp + 3 * step)
        c.eip = off & 0xFFFF
        return RC_BRANCH
    if c.pe and (c.eflags & FL_NT):
        return h_IRET_task(c, i)
    if stack_read(c, esp, sz, &off) or stack_read(c, esp + step, sz, &sel) or \
            stack_read(c, esp + 2 * step, sz, &fl):
        return RC_FAULT
    sel &= 0xFFFF
    if not c.pe:
        seg_load_real(c, S_CS, sel)
        # EFLAGS <- (temp AND 257FD5H) OR (EFLAGS AND 1A0000H) for 32 bits; FLAGS for 16
        mask = 0x257FD5 if sz == 2 else 0x7FD5
    else:
        if sz == 2 and (fl & FL_VM) and c.cpl == 0:
            return enter_v86(c, i, esp, off, sel, fl)
        if (sel & 3) < c.cpl:
            return fault_err(c, EXC_GP, sel & 0xFFFC)
        if (sel & 0xFFFC) == 0:
            return fault_err(c, EXC_GP, 0)
        if read_descriptor(c, sel, &lo, &hi, &gla):
            return RC_FAULT
        typ = (hi >> 8) & 0x1F
        dpl = (hi >> 13) & 3
        if (typ & 0x18) != 0x18 or ((typ & 0x04) and dpl > (sel & 3)) or (not (typ & 0x04) and dpl != (sel & 3)):
            return fault_err(c, EXC_GP, sel & 0xFFFC)
        if not (hi & 0x8000):
            return fault_err(c, EXC_NP, sel & 0xFFFC)
        # the flags a return may change are decided by the privilege it returns from
        mask = FL_ARITH | FL_TF | FL_DF | FL_NT | FL_RF | FL_AC | FL_ID
        if c.cpl == 0:
            mask |= FL_IOPL
        if c.cpl <= ((c.eflags >> 12) & 3):
            mask |= FL_IF
        if sz == 1:
            mask &= 0xFFFF
        if (sel & 3) > c.cpl:
            set_eflags(c, fl, mask)
            if return_outer(c, esp + 3 * step, sz, sel, off, lo, hi, 0):
                return RC_FAULT
            return RC_BRANCH
        seg_from_descriptor(&c.seg[S_CS], sel, lo, hi)
        c.code32 = 1 if hi & 0x400000 else 0
    set_eflags(c, fl, mask)
    c.regs[R_ESP] = sp_update(c, esp, esp + 3 * step)
    c.eip = off & 0xFFFF if sz == 1 else off
    return RC_BRANCH

cdef int h_BOUND(Cpu* c, Insn* i) noexcept nogil:
    """62 /r: #BR unless lower <= Gv <= upper (signed), bounds at m and m + size."""
    cdef int sz = opsz(i)
    cdef uint32_t ea = ea_of(c, i)
    cdef uint32_t la, lo, hi
    cdef int64_t idx = sext(getr_sz(c, i.reg, sz), sz)
    if seg_off(c, i.seg, ea, sz, &la) or rd_sz(c, la, sz, &lo):
        return RC_FAULT
    if seg_off(c, i.seg, ea + (2 if sz == 1 else 4), sz, &la) or rd_sz(c, la, sz, &hi):
        return RC_FAULT
    if idx < sext(lo, sz) or idx > sext(hi, sz):
        return fault(c, EXC_BR)
    return RC_NEXT

cdef int h_SALC(Cpu* c, Insn* i) noexcept nogil:
    """D6 (undocumented, present on every Intel IA-32 CPU): AL = CF ? FFh : 0."""
    setr8(c, R_EAX, 0xFF if get_cf(c) else 0)
    return RC_NEXT

cdef int h_OUTS(Cpu* c, Insn* i) noexcept nogil:
    """6E/6F: one element per exit; a REP prefix re-enters until (E)CX is 0."""
    cdef int sz = i.imm2
    cdef uint32_t amask = str_mask(i)
    cdef int32_t delta = (1 << sz) * (-1 if c.eflags & FL_DF else 1)
    cdef bint rep = (i.flags & (IF_REP | IF_REPNE)) != 0
    cdef uint32_t la, v
    if rep and (c.regs[R_ECX] & amask) == 0:
        c.eip = i.next_eip
        return RC_BRANCH
    if seg_off(c, i.seg, c.regs[R_ESI] & amask, sz, &la) or rd_sz(c, la, sz, &v):
        return RC_FAULT
    str_step(c, R_ESI, amask, delta)
    c.io_port = c.regs[R_EDX] & 0xFFFF
    c.io_size = 1 << sz
    c.io_is_in = 0
    c.io_value = v
    c.exit_reason = EXIT_IO
    c.io_outs_more = 0
    if rep:
        str_step(c, R_ECX, amask, -1)
        if c.regs[R_ECX] & amask:
            # what Engine.io_outs_continue() needs to send the next elements in the same exit
            c.io_outs_more = 1
            c.io_seg = i.seg
            c.io_a16 = 1 if i.flags & IF_A16 else 0
            c.io_next_eip = i.next_eip
            return RC_EXIT_BEFORE
    return RC_EXIT

cdef int h_INS(Cpu* c, Insn* i) noexcept nogil:
    """6C/6D: exit for the port read; io_complete_in() stores the value at ES:(E)DI."""
    cdef int sz = i.imm2
    cdef uint32_t amask = str_mask(i)
    cdef bint rep = (i.flags & (IF_REP | IF_REPNE)) != 0
    cdef uint32_t la
    if rep and (c.regs[R_ECX] & amask) == 0:
        c.eip = i.next_eip
        return RC_BRANCH
    if seg_off_w(c, S_ES, c.regs[R_EDI] & amask, sz, &la):
        return RC_FAULT
    c.io_port = c.regs[R_EDX] & 0xFFFF
    c.io_size = 1 << sz
    c.io_is_in = 1
    c.io_value = 0
    c.io_outs_more = 0
    c.io_string = 1
    c.io_a16 = 1 if i.flags & IF_A16 else 0
    c.io_rep = rep
    c.io_next_eip = i.next_eip
    c.exit_reason = EXIT_IO
    return RC_EXIT_BEFORE

cdef int ins_complete(Cpu* c, uint32_t value) noexcept nogil:
    """Finish an INS element with the value the device returned."""
    cdef int sz = 0 if c.io_size == 1 else (1 if c.io_size == 2 else 2)
    cdef uint32_t amask = 0xFFFF if c.io_a16 else 0xFFFFFFFFU
    cdef int32_t delta = (1 << sz) * (-1 if c.eflags & FL_DF else 1)
    cdef uint32_t la
    c.io_string = 0
    c.io_more = 0
    if seg_off_w(c, S_ES, c.regs[R_EDI] & amask, sz, &la) or wr_sz(c, la, sz, value):
        return deliver_exception(c)
    str_step(c, R_EDI, amask, delta)
    if c.io_rep:
        str_step(c, R_ECX, amask, -1)
        if c.regs[R_ECX] & amask:
            c.io_more = 1
            return 0
    c.eip = c.io_next_eip
    c.icount += 1
    return 0
