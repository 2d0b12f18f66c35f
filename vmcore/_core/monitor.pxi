# The monitor's part inside the engine (bt and trap modes; ARCHITECTURE.md "Modes",
# "Monitor rules"): deprivileging, the virtual context, callouts, trap-and-emulate,
# reflection, and the scanner's translations.
#
# Real and virtual state. Outside run() (and inside an emulation or a reflection, the
# "virtual context") the Cpu holds the virtual CPU: what the guest set and may see.
# While guest code runs it holds the real state the monitor gives the hardware:
#   - the guest kernel (virtual CPL 0, protected mode) runs at real CPL 1, with RPL 1
#     in CS and SS;
#   - there, real EFLAGS.IOPL = 0 and IF = 1: the virtual IF and IOPL are kept in
#     vflags, so CLI/STI/IN/OUT fault into the monitor and the monitor, not the guest,
#     decides when interrupts are taken; code at virtual CPL 3 (user, virtual-8086)
#     runs at its own privilege with its own IF and IOPL, which the hardware judges
#     exactly as it judges them for the guest (interrupts are gated on guest_if either
#     way: the host's own interrupts never pass through this IF);
#   - descriptors with DPL 0 read as DPL 1 (ring compression: read_descriptor plays the
#     shadow GDT/LDT, holding the guest's descriptors at the same indices);
#   - the MMU translates through shadow page tables (shadow.pxi);
#   - every exception and interrupt goes to the monitor (the real IDT is the monitor's),
#     which reflects it through the guest's IDT in the virtual context.
# Real mode has no privilege to take away: it runs on the virtual CPU as it is.
#
# The monitor emulates an instruction by running the engine's own handler for it in
# the virtual context: at the virtual CPL, with the virtual IF/IOPL and the guest's
# descriptors uncompressed. A trap is a #GP raised at the real privilege that the
# emulation then completes (or turns into the guest's own fault); a callout (bt) is
# the same emulation reached without the fault, for the instructions that do not
# fault at CPL 1 but would read or do the wrong thing there.

cdef enum:
    MON_BARE = 0
    MON_BT = 1
    MON_TRAP = 2
    # scanner actions per code byte (vmcore.monitor.sensitive; 0: not scanned)
    ACT_NONE = 0
    ACT_IDENT = 1
    ACT_TRAP = 2
    ACT_CALLOUT = 3         # + callout kind number
    N_CALLOUT_KINDS = 32
    # where the monitor's own tables are in the real linear space (the top 4 MiB, as in
    # VMware's monitor): what SGDT/SIDT show to code that runs without translation
    MON_GDT_LA = 0xFFC00000U
    MON_IDT_LA = 0xFFC10000U

# trap kinds, by the faulting instruction's opcode (vmcore.monitor TRAP_KINDS mirrors this)
cdef enum:
    TK_OTHER = 0
    TK_HLT = 1
    TK_LGDT = 2
    TK_LIDT = 3
    TK_LLDT = 4
    TK_LTR = 5
    TK_LMSW = 6
    TK_CLTS = 7
    TK_MOV_TO_CR = 8
    TK_MOV_FROM_CR = 9
    TK_MOV_DR = 10
    TK_WBINVD = 11
    TK_INVLPG = 12
    TK_RDMSR = 13
    TK_WRMSR = 14
    TK_IN = 15
    TK_OUT = 16
    TK_INS = 17
    TK_OUTS = 18
    TK_CLI = 19
    TK_STI = 20
    TK_IRET = 21
    TK_FAR_RET = 22
    TK_FAR_JMP = 23
    TK_FAR_CALL = 24
    TK_MOV_TO_SREG = 25
    TK_POP_SREG = 26
    TK_LOAD_FAR_POINTER = 27
    TK_POPF = 28
    TK_SYSEXIT = 29
    TK_RDTSC = 30
    TK_INT = 31

cdef inline void to_real(Cpu* c) noexcept nogil:
    """Virtual CPU -> the state guest code runs in (see the top of this file)."""
    c.vctx = 0
    c.vring0 = 0
    c.flags_split = 0
    if c.pe and c.cpl == 0 and not (c.eflags & FL_VM):
        c.vring0 = 1
        c.flags_split = 1
        c.vflags = c.eflags & (FL_IF | FL_IOPL)
        c.eflags = (c.eflags & ~<uint32_t>FL_IOPL) | FL_IF
        c.cpl = 1                           # still a supervisor: the same TLB
        c.seg[S_CS].sel = (c.seg[S_CS].sel & 0xFFFC) | 1
        if (c.seg[S_SS].sel & 3) == 0:
            c.seg[S_SS].sel |= 1

cdef inline void to_virtual(Cpu* c) noexcept nogil:
    c.vctx = 1
    if c.flags_split:
        c.eflags = (c.eflags & ~<uint32_t>(FL_IF | FL_IOPL)) | c.vflags
        c.flags_split = 0
    if c.vring0 and c.cpl == 1:
        c.cpl = 0
        c.seg[S_CS].sel &= 0xFFFC
        if (c.seg[S_SS].sel & 3) == 1:
            c.seg[S_SS].sel &= 0xFFFC
    c.vring0 = 0

cdef inline bint guest_if(Cpu* c) noexcept nogil:
    """The IF that decides whether the guest takes an interrupt: the virtual one."""
    return ((c.vflags if c.flags_split else c.eflags) & FL_IF) != 0

cdef inline void compress_descriptor(Cpu* c, uint32_t* hi) noexcept nogil:
    """The shadow GDT/LDT: a code or data descriptor of DPL 0 reads as DPL 1 while the
    virtual CPL 0 runs at real CPL 1 (c.desc_adj keeps what was added, for write-backs)."""
    c.desc_adj = 0
    if c.vring0 and (hi[0] & 0x1000) and (hi[0] & 0x6000) == 0:
        c.desc_adj = 0x2000
        hi[0] |= 0x2000

cdef inline int emulate(Cpu* c, handler_t fn, Insn* i) noexcept nogil:
    """The monitor's emulation of one instruction: its handler, in the virtual context."""
    cdef int rc
    to_virtual(c)
    rc = fn(c, i)
    to_real(c)
    return rc

cdef int h_CALLOUT(Cpu* c, Insn* i) noexcept nogil:
    """bt: a sensitive instruction of guest-kernel code, run by the monitor in the
    virtual context instead of as it is (the handler it replaces is in callout_fn)."""
    cdef size_t slot = i - c.insn_pool
    c.n_callouts[c.callout_kind[slot]] += 1
    return emulate(c, c.callout_fn[slot], i)

cdef inline int peek_code(Cpu* c, uint32_t gla) noexcept nogil:
    """A code byte through the TLB when it hits (fetch8 otherwise)."""
    cdef TlbEntry* e = &c.tlb[(gla >> 12) & (TLB_SIZE - 1)]
    cdef uint32_t gpa
    if e.tag_r == (gla & 0xFFFFF000U) and e.gpa_page < c.ram_pages:
        gpa = (e.gpa_page << 12) | (gla & 0xFFF)
        return c.ram[gpa]
    return fetch8(c, gla)

cdef inline bint is_legacy_prefix(int b) noexcept nogil:
    return b in (0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3)

cdef int trap_kind(Cpu* c) noexcept nogil:
    """What the instruction at CS:EIP is, for the trap counters (prefixes skipped)."""
    cdef uint32_t gla = c.seg[S_CS].base + c.eip
    cdef int b = -1, b2, reg, k
    for k in range(15):
        b = peek_code(c, gla + k)
        if not is_legacy_prefix(b):
            break
    if b < 0:
        return TK_OTHER
    gla += k
    if b == 0x0F:
        b2 = peek_code(c, gla + 1)
        reg = (peek_code(c, gla + 2) >> 3) & 7
        if b2 == 0x00:
            return TK_LLDT if reg == 2 else (TK_LTR if reg == 3 else TK_OTHER)
        if b2 == 0x01:
            if reg == 2:
                return TK_LGDT
            if reg == 3:
                return TK_LIDT
            if reg == 6:
                return TK_LMSW
            return TK_INVLPG if reg == 7 else TK_OTHER
        if b2 == 0x06:
            return TK_CLTS
        if b2 == 0x08 or b2 == 0x09:
            return TK_WBINVD
        if b2 == 0x20:
            return TK_MOV_FROM_CR
        if b2 == 0x22:
            return TK_MOV_TO_CR
        if b2 == 0x21 or b2 == 0x23:
            return TK_MOV_DR
        if b2 == 0x30:
            return TK_WRMSR
        if b2 == 0x32:
            return TK_RDMSR
        if b2 == 0x31 or b2 == 0x33:
            return TK_RDTSC
        if b2 == 0x35:
            return TK_SYSEXIT
        if b2 == 0xA1 or b2 == 0xA9:
            return TK_POP_SREG
        if b2 == 0xB2 or b2 == 0xB4 or b2 == 0xB5:
            return TK_LOAD_FAR_POINTER
        return TK_OTHER
    if b == 0xF4:
        return TK_HLT
    if b == 0xFA:
        return TK_CLI
    if b == 0xFB:
        return TK_STI
    if b == 0xCF:
        return TK_IRET
    if b == 0xCA or b == 0xCB:
        return TK_FAR_RET
    if b == 0xEA:
        return TK_FAR_JMP
    if b == 0x9A:
        return TK_FAR_CALL
    if b == 0x8E:
        return TK_MOV_TO_SREG
    if b == 0x07 or b == 0x17 or b == 0x1F:
        return TK_POP_SREG
    if b == 0xC4 or b == 0xC5:
        return TK_LOAD_FAR_POINTER
    if b == 0x9D:
        return TK_POPF
    if b == 0xE4 or b == 0xE5 or b == 0xEC or b == 0xED:
        return TK_IN
    if b == 0xE6 or b == 0xE7 or b == 0xEE or b == 0xEF:
        return TK_OUT
    if b == 0x6C or b == 0x6D:
        return TK_INS
    if b == 0x6E or b == 0x6F:
        return TK_OUTS
    if b == 0xCC or b == 0xCD or b == 0xCE:
        return TK_INT
    if b == 0xFF:
        reg = (peek_code(c, gla + 1) >> 3) & 7
        return TK_FAR_CALL if reg == 3 else (TK_FAR_JMP if reg == 5 else TK_OTHER)
    return TK_OTHER

# Adaptive translation (as VMware's BT: Adams & Agesen, ASPLOS 2006, §3.2): a privileged
# instruction of translated guest-kernel code that keeps trapping is retranslated into a
# callout, so it costs a call into the monitor instead of a #GP and its decoding. Only the
# instructions that fault at CPL 1 whatever their operands (TK_HLT..TK_OUTS) qualify: their
# emulation after the fault and as a callout are the same handler in the same context.
cdef enum:
    ADAPT_SLOTS = 1024
    ADAPT_AFTER = 8          # traps before the instruction is retranslated
    ADAPT_HOT = 0xFFFF

cdef inline uint32_t adapt_slot(uint32_t gla) noexcept nogil:
    return (gla * 2654435761U) >> 22       # Fibonacci hashing onto 10 bits

cdef inline bint adapt_hot(Cpu* c, uint32_t gla) noexcept nogil:
    cdef uint32_t s = adapt_slot(gla)
    return c.adapt_gla[s] == gla and c.adapt_traps[s] == ADAPT_HOT

cdef void adapt_note_trap(Cpu* c, uint32_t gla) noexcept nogil:
    """One more trap of the guest-kernel instruction at gla; the ADAPT_AFTER-th drops the
    blocks that hold it, and its next decoding makes it a callout (decode_block)."""
    cdef uint32_t s = adapt_slot(gla), gpa
    if c.adapt_gla[s] != gla:
        if c.adapt_traps[s] == ADAPT_HOT:
            return                          # the slot stays with the instruction retranslated first
        c.adapt_gla[s] = gla
        c.adapt_traps[s] = 0
    if c.adapt_traps[s] == ADAPT_HOT:
        return                              # a block decoded before it became hot, still cached
    c.adapt_traps[s] += 1
    if c.adapt_traps[s] < ADAPT_AFTER:
        return
    c.adapt_traps[s] = ADAPT_HOT
    if code_gpa(c, gla, &gpa) == 0 and (gpa >> 12) < c.ram_pages:
        c.n_adaptive_retranslations += 1
        invalidate_code(c, gpa >> 12)

cdef int h_ADAPTIVE(Cpu* c, Insn* i) noexcept nogil:
    """bt: an instruction retranslated by adaptive translation: the callout the trap became."""
    cdef size_t slot = i - c.insn_pool
    c.n_adaptive_calls += 1
    return emulate(c, c.callout_fn[slot], i)

cdef int mon_trap(Cpu* c, Insn* i) noexcept nogil:
    """A #GP at the real privilege (eip at the instruction): emulate the instruction at
    the virtual one. RC_FAULT means the guest itself faults (exception set, virtual)."""
    cdef int kind = trap_kind(c)
    cdef uint32_t gla = c.seg[S_CS].base + c.eip
    cdef bint adaptive = c.mon == MON_BT and c.vring0 and TK_HLT <= kind <= TK_OUTS
    cdef int rc = emulate(c, i.fn, i)
    if rc != RC_FAULT:
        c.n_traps[kind] += 1
        if adaptive:
            adapt_note_trap(c, gla)
    return rc

cdef int mon_deliver(Cpu* c) noexcept nogil:
    """Reflection: the exception or interrupt that reached the monitor goes to the guest
    through its own IDT, with the frame the virtual CPU would push."""
    cdef int rc
    c.n_reflections += 1
    if c.exc_vector == EXC_PF:
        c.n_true_faults += 1
    to_virtual(c)
    rc = deliver_exception(c)
    to_real(c)
    return rc

cdef int deliver(Cpu* c) noexcept nogil:
    """Deliver c.exc_vector; 1 if the run must end (triple fault)."""
    cdef int rc
    add_slow_work(c, 256)
    c.mmio_blocked += 1     # a delivery's own accesses are not MMIO exits (memory.pxi)
    if c.mon:
        rc = mon_deliver(c)
    else:
        rc = deliver_exception(c)
    c.mmio_blocked -= 1
    return rc

cdef inline void mon_resync(Cpu* c) noexcept nogil:
    """After an instruction that may have changed the CPL or PE without the monitor
    (a task switch, IRET with NT, CR0.PE from real mode): the real state again."""
    if c.vctx:
        return
    if (c.vring0 == 0 or c.cpl == 1) and not (c.pe and c.cpl == 0 and not (c.eflags & FL_VM)):
        return
    to_virtual(c)
    to_real(c)

# ---- translations (bt) -------------------------------------------------------------------

# Decode-time classification: the table of sensitive instructions (vmcore/monitor/sensitive.py)
# as the scanner applies it, generated for every encoding by gen_sensitive.py. The Python
# scanner stays the independent check (Engine.xlat_source = "scanner": tests/test_bt_classify.py).
# A new Engine starts with the scanner; Machine makes "engine" its default.

cdef extern from "sensitive_table.h" nogil:
    const uint8_t vms_top[2][4][256]
    const uint8_t vms_sub[1][4][256]        # VMS_N_SUB of them (the header's size)
    int VMS_SUB_BASE

cdef enum:
    XS_ENGINE = 1
    XS_SCANNER = 0
    CLASSIFY_NEED_MORE = -1
    MAX_PREFIXES = 14                       # a 15th byte must be the opcode (SDM Vol. 2 §2.3.11)

cdef int classify_bytes(const uint8_t* p, int n, bint code32, bint final) noexcept nogil:
    """The action (ACT_*) for the instruction whose first n bytes are p. Not final: NEED_MORE
    when the answer depends on a byte past n. Final (no more bytes can be read): ACT_IDENT if
    the opcode is missing (its fetch faults when it runs), ModRM 0 where only it is missing
    (the opcode has none, or the decoder faults on it first)."""
    cdef int k = 0, pclass = 0, table = 0, op, v
    while k < n and k < MAX_PREFIXES and is_legacy_prefix(p[k]):
        if p[k] == 0x66:
            if pclass == 0:
                pclass = 1                  # 66 is a mandatory prefix only without F2/F3
        elif p[k] == 0xF3:
            pclass = 2
        elif p[k] == 0xF2:
            pclass = 3
        k += 1
    if k >= n:
        return ACT_IDENT if final else CLASSIFY_NEED_MORE
    op = p[k]
    if op == 0x0F:
        k += 1
        if k >= n:
            return ACT_IDENT if final else CLASSIFY_NEED_MORE
        op = p[k]
        table = 1
        if op == 0x38 or op == 0x3A:
            table = 2 if op == 0x38 else 3
            k += 1
            if k >= n:
                return ACT_IDENT if final else CLASSIFY_NEED_MORE
            op = p[k]
    v = vms_top[1 if code32 else 0][table][op]
    if v < VMS_SUB_BASE:
        return v
    if k + 1 < n:
        return vms_sub[v - VMS_SUB_BASE][pclass][p[k + 1]]
    # two statements, not a conditional expression: Cython types `x if f else y` as the table's
    # uint8_t, and NEED_MORE (-1) became 255, a callout kind far past n_callouts (heap write)
    if final:
        return vms_sub[v - VMS_SUB_BASE][pclass][0]
    return CLASSIFY_NEED_MORE

cdef int classify_buffer(const uint8_t* p, int avail, bint code32) noexcept nogil:
    """classify_bytes asked as classify_code asks it while it fetches: one more byte each time
    until the answer does not need more (the API's and the tests' way into the same loop)."""
    cdef int n, act
    if avail > 15:
        avail = 15
    for n in range(avail + 1):
        act = classify_bytes(p, n, code32, n == avail)
        if act != CLASSIFY_NEED_MORE:
            return act
    return ACT_IDENT

cdef int classify_code(Cpu* c, uint32_t gla) noexcept nogil:
    """classify_bytes on the code at gla, reading only the bytes it needs."""
    cdef uint8_t buf[16]
    cdef int n = 0, b, act
    c.n_xlat_classified += 1
    while True:
        act = classify_bytes(buf, n, c.code32, n == 15)
        if act != CLASSIFY_NEED_MORE:
            return act
        b = peek_code(c, gla + <uint32_t>n)
        if b < 0:
            return classify_bytes(buf, n, c.code32, True)
        buf[n] = <uint8_t>b
        n += 1


cdef int xlat_action(Cpu* c, uint32_t gla, uint32_t* gpa_out) noexcept nogil:
    """The scanner's action for the instruction starting at gla: ACT_NONE if not scanned."""
    cdef uint32_t gpa
    cdef uint8_t* p
    if code_gpa(c, gla, &gpa):
        return ACT_IDENT            # does not translate: the fetch fault is raised when it runs
    gpa_out[0] = gpa
    if gpa >= c.ram_size:
        return ACT_IDENT            # ROM or open bus: not scanned (see the closing note)
    p = c.xlat[gpa >> 12]
    if p == NULL:
        return ACT_NONE
    return p[gpa & 0xFFF]

cdef int xlat_set(Cpu* c, uint32_t gpa, int action, uint32_t length) noexcept nogil:
    """Record the scanner's action for the instruction at gpa; its bytes become code
    (written: the page's translations and blocks are dropped)."""
    cdef uint32_t page = gpa >> 12
    cdef uint32_t off = gpa & 0xFFF
    cdef uint32_t n
    if page >= c.ram_pages or action <= ACT_NONE or action >= ACT_CALLOUT + N_CALLOUT_KINDS:
        return -1
    if c.xlat[page] == NULL:
        c.xlat[page] = <uint8_t*>calloc(4096, 1)
        if c.xlat[page] == NULL:
            return -1
    c.xlat[page][off] = <uint8_t>action
    n = length if length else 1
    if n > 4096 - off:
        n = 4096 - off
    mark_code_gpa(c, page, off, n)
    return 0

cdef void xlat_drop_page(Cpu* c, uint32_t page) noexcept nogil:
    if c.xlat != NULL and page < c.ram_pages and c.xlat[page] != NULL:
        free(c.xlat[page])
        c.xlat[page] = NULL
        c.n_xlat_invalidated += 1

cdef void xlat_drop_all(Cpu* c) noexcept nogil:
    cdef uint32_t k
    if c.xlat == NULL:
        return
    for k in range(c.ram_pages):
        xlat_drop_page(c, k)
