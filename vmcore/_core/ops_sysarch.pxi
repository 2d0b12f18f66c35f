# System instructions (SDM Vol. 2, and Vol. 3 chapters 2-5): descriptor-table
# registers, control and debug registers, TLB and cache control, model-specific
# registers, SYSENTER/SYSEXIT, and the protection queries LAR/LSL/VERR/VERW.
# Privileged ones fault with #GP(0) outside CPL 0; the protected-mode-only ones
# are #UD in real mode.

cdef inline int need_cpl0(Cpu* c) noexcept nogil:
    if c.pe and (c.cpl != 0 or (c.eflags & FL_VM)):
        return fault_err(c, EXC_GP, 0)
    return 0

cdef inline void set_cpl(Cpu* c, uint32_t cpl) noexcept nogil:
    c.cpl = cpl
    tlb_select(c)

cdef int h_SxDT(Cpu* c, Insn* i) noexcept nogil:
    """0F 01 /0 SGDT, /1 SIDT (op 1): limit, then base (24 bits and a zero byte with o16)."""
    cdef uint32_t ea = ea_of(c, i)
    cdef uint32_t la, la2
    cdef uint32_t base = c.idtr_base if i.op else c.gdtr_base
    cdef uint32_t limit = c.idtr_limit if i.op else c.gdtr_limit
    if c.flags_split:
        # guest code running as it is under the monitor reads the real registers
        base = MON_IDT_LA if i.op else MON_GDT_LA
        limit = 0x7FF if i.op else limit
    if seg_off_w(c, i.seg, ea, 1, &la) or seg_off_w(c, i.seg, ea + 2, 2, &la2):
        return RC_FAULT
    if i.flags & IF_O16:
        base &= 0x00FFFFFF
    if wr16(c, la, limit) or wr32(c, la2, base):
        return RC_FAULT
    return RC_NEXT

cdef int h_LxDT(Cpu* c, Insn* i) noexcept nogil:
    """0F 01 /2 LGDT, /3 LIDT (op 1)."""
    cdef uint32_t ea = ea_of(c, i)
    cdef uint32_t la, la2, limit, base
    if need_cpl0(c):
        return RC_FAULT
    if seg_off(c, i.seg, ea, 1, &la) or seg_off(c, i.seg, ea + 2, 2, &la2):
        return RC_FAULT
    if rd16(c, la, &limit) or rd32(c, la2, &base):
        return RC_FAULT
    if i.flags & IF_O16:
        base &= 0x00FFFFFF
    if i.op:
        c.idtr_base = base
        c.idtr_limit = limit
    else:
        c.gdtr_base = base
        c.gdtr_limit = limit
    return RC_NEXT

cdef int h_SMSW(Cpu* c, Insn* i) noexcept nogil:
    """0F 01 /4: CR0 bits 0-15 (a 32-bit register gets all of CR0)."""
    cdef uint32_t la
    cdef uint32_t cr0 = c.cr0
    if c.flags_split:
        cr0 |= CR0_PE | CR0_ET | CR0_NE | CR0_WP | CR0_PG     # the monitor's real CR0
    if i.flags & IF_MEM:
        if seg_addr_w(c, i, 1, &la):
            return RC_FAULT
        return wr16(c, la, cr0 & 0xFFFF)
    setr_sz(c, i.rm, opsz(i), cr0 if opsz(i) == 2 else cr0 & 0xFFFF)
    return RC_NEXT

cdef int write_cr0(Cpu* c, uint32_t v) noexcept nogil:
    """MOV CR0 / LMSW: #GP(0) for PG without PE or NW without CD (SDM Vol. 3 §2.5)."""
    cdef uint32_t old = c.cr0
    cdef int k
    v = (v & (CR0_PE | CR0_MP | CR0_EM | CR0_TS | CR0_NE | CR0_WP | CR0_AM | CR0_NW | CR0_CD | CR0_PG)) | CR0_ET
    if ((v & CR0_PG) and not (v & CR0_PE)) or ((v & CR0_NW) and not (v & CR0_CD)):
        return fault_err(c, EXC_GP, 0)
    c.cr0 = v
    c.pe = v & CR0_PE
    if (old ^ v) & CR0_PE:
        # the cached segments keep their bases and limits; only the type checks change
        for k in range(6):
            seg_set_limits(&c.seg[k], not c.pe)
    if (old ^ v) & (CR0_PG | CR0_WP | CR0_PE):
        tlb_flush_all(c)
    return 0

cdef void load_cr3(Cpu* c, uint32_t v) noexcept nogil:
    """Every CR3 load (MOV CR3, a task switch, a task gate): the new page directory, the
    monitor's shadow of it, and the TLB without its non-global entries (SDM Vol. 3 §4.10.4.1)."""
    c.cr3 = v & 0xFFFFF018U
    c.shadow_cur = NULL             # the monitor: the shadow of the new page directory, found on use
    tlb_flush_nonglobal(c)

cdef int write_cr(Cpu* c, uint32_t n, uint32_t v) noexcept nogil:
    """CR0, CR2, CR3 or CR4 as MOV CRn writes it at CPL 0: RC_FAULT with #GP for bits
    this CPU does not have. CR3 loads keep global translations (SDM Vol. 3 §4.10.4.1)."""
    if n == 0:
        return write_cr0(c, v)
    if n == 2:
        c.cr2 = v
    elif n == 3:
        load_cr3(c, v)
    else:
        # implemented: TSD, DE, PSE, PGE, PCE (RDPMC at CPL > 0), OSFXSR (FXSAVE/FXRSTOR, which
        # save no SSE state here); any other bit is reserved here (#GP)
        if v & ~<uint32_t>(CR4_TSD | CR4_DE | CR4_PSE | CR4_PGE | CR4_PCE | CR4_OSFXSR):
            return fault_err(c, EXC_GP, 0)
        if (c.cr4 ^ v) & (CR4_PSE | CR4_PGE):
            c.cr4 = v
            tlb_flush_all(c)
            if c.mon:
                shadow_flush_all(c)     # shadow entries were composed under the old rules
        c.cr4 = v
    return 0

cdef int h_LMSW(Cpu* c, Insn* i) noexcept nogil:
    """0F 01 /6: loads PE MP EM TS; can set PE but not clear it."""
    cdef uint32_t v, la = 0
    if need_cpl0(c):
        return RC_FAULT
    if load_E(c, i, 1, &v, &la):
        return RC_FAULT
    v = (c.cr0 & ~<uint32_t>0xE) | (v & 0xE) | ((v | c.cr0) & CR0_PE)
    if write_cr0(c, v):
        return RC_FAULT
    c.eip = i.next_eip
    return RC_BRANCH

cdef int h_INVLPG(Cpu* c, Insn* i) noexcept nogil:
    """0F 01 /7: forget the translation of the page holding m."""
    if need_cpl0(c):
        return RC_FAULT
    if c.mon:
        shadow_invlpg(c, c.seg[i.seg].base + ea_of(c, i))
    tlb_flush_page(c, c.seg[i.seg].base + ea_of(c, i))
    c.eip = i.next_eip
    return RC_BRANCH

cdef int h_MOV_CR(Cpu* c, Insn* i) noexcept nogil:
    """0F 20 MOV r32, CRn / 0F 22 MOV CRn, r32 (op 1). The ModRM mod field is ignored."""
    cdef uint32_t n = i.reg
    cdef uint32_t v
    if need_cpl0(c):
        return RC_FAULT
    if n == 1 or n > 4:
        return fault(c, EXC_UD)
    if not i.op:
        c.regs[i.rm] = c.cr0 if n == 0 else (c.cr2 if n == 2 else (c.cr3 if n == 3 else c.cr4))
        return RC_NEXT
    if write_cr(c, n, c.regs[i.rm]):
        return RC_FAULT
    c.eip = i.next_eip
    return RC_BRANCH

cdef int h_MOV_DR(Cpu* c, Insn* i) noexcept nogil:
    """0F 21 / 0F 23 (op 1). DR4/DR5 alias DR6/DR7 unless CR4.DE. The registers hold
    their values; breakpoints are not armed by this engine."""
    cdef uint32_t n = i.reg
    if need_cpl0(c):
        return RC_FAULT
    if n == 4 or n == 5:
        if c.cr4 & CR4_DE:
            return fault(c, EXC_UD)
        n += 2
    if not i.op:
        c.regs[i.rm] = c.dr[n] | (0xFFFF0FF0U if n == 6 else (0x400 if n == 7 else 0))
    else:
        c.dr[n] = c.regs[i.rm]
    return RC_NEXT

cdef int h_CLTS(Cpu* c, Insn* i) noexcept nogil:
    """0F 06."""
    if need_cpl0(c):
        return RC_FAULT
    c.cr0 &= ~<uint32_t>CR0_TS
    return RC_NEXT

cdef int h_CACHE(Cpu* c, Insn* i) noexcept nogil:
    """0F 08 INVD / 0F 09 WBINVD: no caches are modelled."""
    if need_cpl0(c):
        return RC_FAULT
    return RC_NEXT

cdef enum:
    MSR_TSC = 0x10
    MSR_APIC_BASE = 0x1B
    MSR_BIOS_SIGN_ID = 0x8B     # IA32_BIOS_SIGN_ID: the microcode revision (EDX) after CPUID leaf 1
    MSR_PERFCTR0 = 0xC1         # P6 family performance counters (SDM Vol. 3 §20.6.8): 40 bits;
    MSR_PERFCTR1 = 0xC2         # here they keep what is written and count no events
    MSR_EVNTSEL0 = 0x186
    MSR_EVNTSEL1 = 0x187
    MSR_SYSENTER_CS = 0x174
    MSR_SYSENTER_ESP = 0x175
    MSR_SYSENTER_EIP = 0x176
    APIC_BASE_BSP = 0x100       # IA32_APIC_BASE (SDM Vol. 3 §10.4.4, Figure 10-5): bit 8 BSP,
    APIC_BASE_EN = 0x800        # bit 11 global enable, bits 12-35 the base (36-bit physical: 12-31 here)

cdef int h_RDMSR(Cpu* c, Insn* i) noexcept nogil:
    """0F 32: the MSRs this engine has; #GP(0) for any other (SDM Vol. 4)."""
    cdef uint64_t v
    cdef uint32_t n = c.regs[R_ECX]
    if need_cpl0(c):
        return RC_FAULT
    if n == MSR_TSC:
        v = tsc_now(c, i)
    elif n == MSR_BIOS_SIGN_ID:
        v = 0                   # no microcode update loaded (revision 0)
    elif n == MSR_PERFCTR0 or n == MSR_PERFCTR1:
        v = c.msr_perf[n - MSR_PERFCTR0]
    elif n == MSR_EVNTSEL0 or n == MSR_EVNTSEL1:
        v = c.msr_perf[2 + n - MSR_EVNTSEL0]
    elif n == MSR_APIC_BASE:
        v = c.msr_apic_base
    elif n == MSR_SYSENTER_CS:
        v = c.msr_sysenter_cs
    elif n == MSR_SYSENTER_ESP:
        v = c.msr_sysenter_esp
    elif n == MSR_SYSENTER_EIP:
        v = c.msr_sysenter_eip
    else:
        c.n_msr_unknown += 1    # a P6 without it raises #GP(0) too: Linux's rdmsr_safe probes count here
        return fault_err(c, EXC_GP, 0)
    c.regs[R_EAX] = <uint32_t>v
    c.regs[R_EDX] = <uint32_t>(v >> 32)
    return RC_NEXT

cdef int h_WRMSR(Cpu* c, Insn* i) noexcept nogil:
    """0F 30. Writing the TSC is refused (#GP): the time stamp counts instructions."""
    cdef uint32_t n = c.regs[R_ECX]
    cdef uint64_t v = (<uint64_t>c.regs[R_EDX] << 32) | c.regs[R_EAX]
    if need_cpl0(c):
        return RC_FAULT
    if n == MSR_BIOS_SIGN_ID:
        pass                    # software writes 0 before CPUID to read the revision back
    elif n == MSR_PERFCTR0 or n == MSR_PERFCTR1:
        # WRMSR writes bits 31:0 of a counter, sign-extended to its 40 bits
        v = <uint64_t><uint32_t>v
        if v & 0x80000000ULL:
            v |= 0xFF00000000ULL
        c.msr_perf[n - MSR_PERFCTR0] = v
    elif n == MSR_EVNTSEL0 or n == MSR_EVNTSEL1:
        c.msr_perf[2 + n - MSR_EVNTSEL0] = v & 0xFFFFFFFFULL
    elif n == MSR_APIC_BASE:
        # without an APIC (apic_present = 0) the enable bit stays clear: the CPU has none to enable
        c.msr_apic_base = v & (0xFFFFF000ULL | APIC_BASE_BSP | (APIC_BASE_EN if c.apic_present else 0))
        c.mmio_const_n = 0          # the APIC's published registers (memory.pxi): it publishes them again
    elif n == MSR_SYSENTER_CS:
        c.msr_sysenter_cs = <uint32_t>v & 0xFFFF
    elif n == MSR_SYSENTER_ESP:
        c.msr_sysenter_esp = <uint32_t>v
    elif n == MSR_SYSENTER_EIP:
        c.msr_sysenter_eip = <uint32_t>v
    else:
        c.n_msr_unknown += 1
        return fault_err(c, EXC_GP, 0)
    return RC_NEXT

cdef int h_RDPMC(Cpu* c, Insn* i) noexcept nogil:
    """0F 33: performance counter ECX into EDX:EAX (SDM Vol. 2 RDPMC; P6: counters 0 and 1,
    40 bits). #GP(0) at CPL > 0 (or in virtual-8086 mode) unless CR4.PCE, and for any other
    counter number. The counters hold what WRMSR put there: they count no events."""
    cdef uint32_t n = c.regs[R_ECX]
    cdef uint64_t v
    if c.pe and (c.cpl != 0 or (c.eflags & FL_VM)) and not (c.cr4 & CR4_PCE):
        return fault_err(c, EXC_GP, 0)
    if n > 1:
        return fault_err(c, EXC_GP, 0)
    v = c.msr_perf[n] & 0xFFFFFFFFFFULL
    c.regs[R_EAX] = <uint32_t>v
    c.regs[R_EDX] = <uint32_t>(v >> 32)
    return RC_NEXT

cdef void seg_flat(Cpu* c, int idx, uint32_t sel, uint32_t attr) noexcept nogil:
    """A flat 4 GiB segment as SYSENTER/SYSEXIT load it (SDM Vol. 2 SYSENTER)."""
    c.seg[idx].sel = <uint16_t>sel
    c.seg[idx].base = 0
    c.seg[idx].limit = 0xFFFFFFFFU
    c.seg[idx].attr = <uint16_t>attr
    seg_set_limits(&c.seg[idx], False)

cdef int h_SYSENTER(Cpu* c, Insn* i) noexcept nogil:
    """0F 34: to CPL 0 at SYSENTER_EIP with SYSENTER_ESP, flat CS = SYSENTER_CS, SS = CS + 8."""
    if c.mon and not c.vctx:
        # the real SYSENTER MSRs are the monitor's: it enters the guest kernel itself
        return emulate(c, h_SYSENTER, i)
    if not c.pe or (c.msr_sysenter_cs & 0xFFFC) == 0:
        return fault_err(c, EXC_GP, 0)
    c.eflags &= ~<uint32_t>(FL_VM | FL_IF | FL_RF)
    seg_flat(c, S_CS, c.msr_sysenter_cs & 0xFFFC, 0xC09B)
    seg_flat(c, S_SS, (c.msr_sysenter_cs & 0xFFFC) + 8, 0xC093)
    c.code32 = 1
    c.ss32 = 1
    c.ss_mask = 0xFFFFFFFFU
    set_cpl(c, 0)
    c.regs[R_ESP] = c.msr_sysenter_esp
    c.eip = c.msr_sysenter_eip
    return RC_BRANCH

cdef int h_SYSEXIT(Cpu* c, Insn* i) noexcept nogil:
    """0F 35: to CPL 3 at EDX with ESP = ECX, CS = SYSENTER_CS + 16, SS = + 24."""
    if not c.pe or c.cpl != 0 or (c.msr_sysenter_cs & 0xFFFC) == 0:
        return fault_err(c, EXC_GP, 0)
    seg_flat(c, S_CS, ((c.msr_sysenter_cs & 0xFFFC) + 16) | 3, 0xC0FB)
    seg_flat(c, S_SS, ((c.msr_sysenter_cs & 0xFFFC) + 24) | 3, 0xC0F3)
    c.code32 = 1
    c.ss32 = 1
    c.ss_mask = 0xFFFFFFFFU
    set_cpl(c, 3)
    c.regs[R_ESP] = c.regs[R_ECX]
    c.eip = c.regs[R_EDX]
    return RC_BRANCH

cdef int h_SLDT_STR(Cpu* c, Insn* i) noexcept nogil:
    """0F 00 /0 SLDT, /1 STR (op 1)."""
    cdef uint32_t sel = c.tr.sel if i.op else c.ldtr.sel
    cdef uint32_t la
    if i.flags & IF_MEM:
        if seg_addr_w(c, i, 1, &la):
            return RC_FAULT
        return wr16(c, la, sel)
    setr_sz(c, i.rm, opsz(i), sel)
    return RC_NEXT

cdef int h_LLDT_LTR(Cpu* c, Insn* i) noexcept nogil:
    """0F 00 /2 LLDT, /3 LTR (op 1): a GDT descriptor of an LDT (type 2) or an available
    TSS (1 or 9), which LTR marks busy (SDM Vol. 3 §7.2.4)."""
    cdef uint32_t sel, la = 0, lo, hi, gla, typ
    if need_cpl0(c):
        return RC_FAULT
    if load_E(c, i, 1, &sel, &la):
        return RC_FAULT
    if (sel & 0xFFFC) == 0:
        if i.op:
            return fault_err(c, EXC_GP, 0)
        c.ldtr.sel = <uint16_t>sel
        c.ldtr.base = 0
        c.ldtr.limit = 0
        return RC_NEXT
    if sel & 4:
        return fault_err(c, EXC_GP, sel & 0xFFFC)
    if read_descriptor(c, sel, &lo, &hi, &gla):
        return RC_FAULT
    typ = (hi >> 8) & 0x1F
    if (i.op and typ != 0x01 and typ != 0x09) or (not i.op and typ != 0x02):
        return fault_err(c, EXC_GP, sel & 0xFFFC)
    if not (hi & 0x8000):
        return fault_err(c, EXC_NP, sel & 0xFFFC)
    if i.op:
        hi |= 0x200                     # busy
        if sys_wr32(c, gla + 4, hi):
            return RC_FAULT
        seg_from_descriptor(&c.tr, sel, lo, hi)
    else:
        seg_from_descriptor(&c.ldtr, sel, lo, hi)
    return RC_NEXT

cdef bint desc_visible(Cpu* c, uint32_t sel, uint32_t hi) noexcept nogil:
    """A non-conforming descriptor is visible to LAR/LSL/VERR/VERW only if DPL >= CPL and RPL."""
    cdef uint32_t dpl = (hi >> 13) & 3
    if (hi & 0x1C00) == 0x1C00 and (hi & 0x1000):
        return True                     # conforming code
    return dpl >= c.cpl and dpl >= (sel & 3)

cdef int h_LAR_LSL(Cpu* c, Insn* i) noexcept nogil:
    """0F 02 LAR, 0F 03 LSL (op 1): ZF = 1 and the access rights / byte limit if the
    descriptor is valid and visible (SDM Vol. 2 LAR, LSL: the type tables)."""
    cdef int sz = opsz(i)
    cdef uint32_t sel, la = 0, lo, hi, gla, typ, limit
    cdef uint32_t f = compute_flags(c)
    cdef bint ok
    if load_E(c, i, 1, &sel, &la):
        return RC_FAULT
    ok = (sel & 0xFFFC) != 0 and ((sel | 7) <= (c.ldtr.limit if sel & 4 else c.gdtr_limit))
    if ok:
        if read_descriptor(c, sel, &lo, &hi, &gla):
            return RC_FAULT
        typ = (hi >> 8) & 0x1F
        if typ & 0x10:
            ok = desc_visible(c, sel, hi)
        elif i.op:
            ok = typ in (1, 2, 3, 9, 11) and desc_visible(c, sel, hi)
        else:
            ok = typ in (1, 2, 3, 4, 5, 9, 11, 12) and desc_visible(c, sel, hi)
    if not ok:
        set_arith_flags(c, f & ~<uint32_t>FL_ZF)
        return RC_NEXT
    if i.op:
        limit = (lo & 0xFFFF) | (hi & 0xF0000)
        if hi & 0x800000:
            limit = (limit << 12) | 0xFFF
        setr_sz(c, i.reg, sz, limit)
    else:
        setr_sz(c, i.reg, sz, hi & 0x00F0FF00)
    set_arith_flags(c, f | FL_ZF)
    return RC_NEXT

cdef int h_ARPL(Cpu* c, Insn* i) noexcept nogil:
    """63 /r ARPL r/m16, r16: raise the RPL of r/m16 to that of r16; ZF = 1 if it changed
    (SDM Vol. 2 ARPL). Always 16-bit; the other flags are kept."""
    cdef uint32_t dst, la = 0
    cdef uint32_t src = getr_sz(c, i.reg, 1)
    cdef uint32_t f
    if load_E_w(c, i, 1, &dst, &la):
        return RC_FAULT
    # a memory destination is checked for writing before the RPLs are compared, so a read-only
    # one faults even when no write is needed: the SDM lists #GP(0) "if the destination is located
    # in a non-writable segment" and #PF without that condition, and ARPL is a read-modify-write
    # (as Bochs models it: read_RMW_virtual_word). The segment check is in load_E_w.
    if (i.flags & IF_MEM) and probe_write(c, la, 2):
        return RC_FAULT
    f = compute_flags(c)
    if (dst & 3) < (src & 3):
        if store_E(c, i, 1, (dst & 0xFFFC) | (src & 3), la):
            return RC_FAULT
        set_arith_flags(c, f | FL_ZF)
    else:
        set_arith_flags(c, f & ~<uint32_t>FL_ZF)
    return RC_NEXT

cdef int h_VERR_VERW(Cpu* c, Insn* i) noexcept nogil:
    """0F 00 /4 VERR, /5 VERW (op 1): ZF = 1 if readable / writable from here."""
    cdef uint32_t sel, la = 0, lo, hi, gla, typ
    cdef uint32_t f = compute_flags(c)
    cdef bint ok
    if load_E(c, i, 1, &sel, &la):
        return RC_FAULT
    ok = (sel & 0xFFFC) != 0 and ((sel | 7) <= (c.ldtr.limit if sel & 4 else c.gdtr_limit))
    if ok:
        if read_descriptor(c, sel, &lo, &hi, &gla):
            return RC_FAULT
        typ = (hi >> 8) & 0x1F
        if not (typ & 0x10):
            ok = False
        elif i.op:
            ok = (typ & 0x1A) == 0x12 and desc_visible(c, sel, hi)      # writable data
        else:
            ok = ((typ & 0x18) == 0x10 or (typ & 0x1A) == 0x1A) and desc_visible(c, sel, hi)
    set_arith_flags(c, (f | FL_ZF) if ok else (f & ~<uint32_t>FL_ZF))
    return RC_NEXT
