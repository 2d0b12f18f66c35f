# I/O, processor identification, time stamp, halt, and the handlers for opcodes
# that are undefined (#UD) or not implemented yet (an exit, never a guess).

cdef int io_allowed(Cpu* c, uint32_t port, uint32_t size) noexcept nogil:
    """CPL <= IOPL, or every bit of the port's bytes clear in the TSS I/O permission
    bitmap (SDM Vol. 1 §19.5); otherwise #GP(0)."""
    cdef uint32_t base, off, bits
    if not c.pe or (c.cpl <= ((c.eflags >> 12) & 3) and not (c.eflags & FL_VM)):
        return 0
    if c.vring0:
        # the deprivileged guest kernel: the monitor's TSS has no I/O bitmap, so every port
        # access faults into the monitor, which emulates it at the virtual CPL 0 (monitor.pxi)
        return fault_err(c, EXC_GP, 0)
    if (c.tr.attr & 0x0F) != 0x0B or c.tr.limit < 0x67:
        return fault_err(c, EXC_GP, 0)      # no 32-bit TSS, so no bitmap
    if sys_rd16(c, c.tr.base + 0x66, &base):
        return RC_FAULT
    off = base + (port >> 3)
    if off + 1 > c.tr.limit:
        return fault_err(c, EXC_GP, 0)
    if sys_rd16(c, c.tr.base + off, &bits):
        return RC_FAULT
    if (bits >> (port & 7)) & ((1 << size) - 1):
        return fault_err(c, EXC_GP, 0)
    return 0

cdef int h_IO(Cpu* c, Insn* i) noexcept nogil:
    """E4-E7 (port imm8), EC-EF (port DX). op bit 0: OUT; imm2 = size index.
    Device I/O is the monitor's: the engine exits and run() is resumed after it."""
    cdef int sz = i.imm2
    cdef uint32_t port = i.imm if i.op & 2 else (c.regs[R_EDX] & 0xFFFF)
    if io_allowed(c, port, 1 << sz):
        return RC_FAULT
    c.io_port = port
    c.io_size = 1 << sz
    c.io_is_in = 0 if i.op & 1 else 1
    c.io_value = getr_sz(c, R_EAX, sz) if i.op & 1 else 0
    c.io_outs_more = 0
    c.exit_reason = EXIT_IO
    return RC_EXIT

cdef int h_HLT(Cpu* c, Insn* i) noexcept nogil:
    """F4: privileged (#GP(0) above CPL 0)."""
    if need_cpl0(c):
        return RC_FAULT
    c.exit_reason = EXIT_HLT
    return RC_EXIT

cdef int h_CPUID(Cpu* c, Insn* i) noexcept nogil:
    """0F A2. What this engine implements, honestly (SDM Vol. 2 CPUID, leaf 1 EDX): an
    i686-class CPU with an x87 FPU (FPU, ops_x87.pxi), DE, PSE, TSC, MSR, CX8, SEP, PGE, CMOV
    and FXSR (FXSAVE/FXRSTOR of the x87 state, CR4.OSFXSR); no VME, no PAE, no MTRRs, no MMX/SSE.
    APIC (bit 9) with a local APIC that IA32_APIC_BASE[11] enables: a processor whose APIC that bit
    disables reports none (SDM Vol. 3 §10.4.3). No TSC-deadline timer (leaf 1 ECX bit 24 clear)."""
    cdef uint32_t leaf = c.regs[R_EAX]
    if leaf == 0:
        c.regs[R_EAX] = 1
        c.regs[R_EBX] = 0x756E6547   # "Genu"
        c.regs[R_EDX] = 0x49656E69   # "ineI"
        c.regs[R_ECX] = 0x6C65746E   # "ntel"
        return RC_NEXT
    # leaf 1, and any leaf above the maximum reports the highest basic leaf
    c.regs[R_EAX] = 0x00000619       # family 6, model 1, stepping 9 (a Pentium Pro without the stepping<8 errata)
    c.regs[R_EBX] = 0
    c.regs[R_ECX] = 0
    c.regs[R_EDX] = ((1 << 0) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 11) | (1 << 13)
                      | (1 << 15) | (1 << 24) | ((1 << 9) if c.msr_apic_base & APIC_BASE_EN else 0))
    return RC_NEXT

cdef inline uint64_t tsc_now(Cpu* c, Insn* i) noexcept nogil:
    """The time stamp counter at instruction ``i`` of the current block: under the host clock
    the host's monotonic time in ns since the machine's clock started (a 1 GHz TSC that keeps
    pace with the PIT and the RTC, which run from the same clock); otherwise the instruction
    count plus the time the clock let pass without instructions."""
    cdef timespec ts
    cdef uint64_t tsc
    if c.tsc_host:
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return <uint64_t>(<int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec - c.tsc_origin_ns)
    tsc = c.icount + c.tsc_offset
    if c.cur_block != NULL:
        tsc += <uint64_t>(i - c.cur_block.insns)
    return tsc

cdef int h_RDTSC(Cpu* c, Insn* i) noexcept nogil:
    """0F 31: a virtual time stamp counter that counts guest instructions, so
    that runs are reproducible, plus ``tsc_offset``: the time the machine's clock let pass
    without instructions (HLT, I/O cycles), so that the TSC keeps pace with the PIT and the
    RTC. #GP(0) above CPL 0 with CR4.TSD."""
    cdef uint64_t tsc
    if (c.cr4 & CR4_TSD) and c.pe and c.cpl != 0:
        return fault_err(c, EXC_GP, 0)
    tsc = tsc_now(c, i)
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
    c.exc_soft_kind = i.imm2 if i.imm2 else (1 if i.op == 1 else 0)
    return RC_FAULT
