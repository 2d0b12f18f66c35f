# The x87 FPU (SDM Vol. 1 Chapter 8; the instruction pages of Vol. 2): the escape opcodes
# D8-DF, FWAIT, FXSAVE/FXRSTOR (0F AE /0 /1).
#
# State: cpu.fpu, an FNSAVE image (x87_host.h: the 32-bit protected-mode layout, SDM Vol. 1
# Figure 8-9) holding FCW, FSW (with TOP), the tag word (of which only empty / not empty is
# state: FNSTENV and FNSAVE compute the rest from the registers) and ST0-ST7; the last
# instruction and operand pointers (FIP/FCS/FOP, FDP/FDS) are the guest's, kept in cpu.fpu_*
# beside it (the image's own pointer fields are scratch: the host writes its own there).
#
# Arithmetic, compares, loads, stores, constants, transcendentals, FXCH, FFREE, FINCSTP,
# FDECSTP, FLDCW, FNSTCW, FNSTSW m16, FNCLEX and FNINIT run on the host x87 (X87_RUN), one
# instruction at a time with the guest's state loaded, so results, flags and the status word
# are the hardware's bit for bit. The engine reads a memory operand into a 16-byte buffer first
# (a store's destination too, after its write checks, so that a store the FPU suppresses -- an
# unmasked exception -- leaves memory alone) and copies a store's buffer back after.
# The instructions whose memory layout depends on the guest's mode, or that hold the pointers,
# are emulated here: FNSTSW AX, FNSTENV/FLDENV, FNSAVE/FRSTOR, FXSAVE/FXRSTOR.

cdef extern from "x87_ops.h" nogil:
    ctypedef void (*x87_host_fn)(x87_image_t* g, uint8_t* m, uint64_t* fl) noexcept nogil
    const x87_host_fn x87_host_table[2048]
    const uint16_t x87_class_table[2048]
    enum:
        X87_K_UD, X87_K_HOST, X87_K_FNSTSW_AX, X87_K_FLDENV, X87_K_FNSTENV, X87_K_FRSTOR, X87_K_FNSAVE
        X87_WAIT, X87_CTL, X87_FL_IN, X87_FL_OUT, X87_INIT, X87_STORE, X87_SIZE_SHIFT

cdef enum:
    FS_CW = 0           # offsets in the FNSAVE image
    FS_SW = 4
    FS_TW = 8
    FS_ST = 28          # ST0-ST7, 10 bytes each
    SW_IE = 0x0001
    SW_SF = 0x0040
    SW_ES = 0x0080      # error summary: an unmasked exception flag is set
    SW_B = 0x8000       # busy: mirrors ES since the 387
    SW_EXC = 0x003F     # IE DE ZE OE UE PE
    CW_MASKS = 0x003F
    FX_MXCSR_DEFAULT = 0x1F80

cdef inline void fpu_put16(Cpu* c, int off, uint32_t v) noexcept nogil:
    c.fpu.b[off] = v & 0xFF
    c.fpu.b[off + 1] = (v >> 8) & 0xFF

cdef inline uint32_t fpu_cw(Cpu* c) noexcept nogil:
    return c.fpu.b[FS_CW] | (<uint32_t>c.fpu.b[FS_CW + 1] << 8)

cdef inline uint32_t fpu_sw(Cpu* c) noexcept nogil:
    return c.fpu.b[FS_SW] | (<uint32_t>c.fpu.b[FS_SW + 1] << 8)

cdef inline uint8_t* fpu_st(Cpu* c, uint32_t k) noexcept nogil:
    return &c.fpu.b[FS_ST + 10 * k]

cdef inline uint32_t fpu_nonempty(Cpu* c) noexcept nogil:
    """The abridged tag word: bit j set when physical register j is not empty."""
    cdef uint32_t tw = c.fpu.b[FS_TW] | (<uint32_t>c.fpu.b[FS_TW + 1] << 8)
    cdef uint32_t ftw = 0, k
    for k in range(8):
        if ((tw >> (2 * k)) & 3) != 3:
            ftw |= 1 << k
    return ftw

cdef inline void fpu_set_nonempty(Cpu* c, uint32_t ftw) noexcept nogil:
    """Tag word from the abridged one: 11 for an empty register, 00 (not empty) otherwise."""
    cdef uint32_t tw = 0, k
    for k in range(8):
        if not (ftw >> k) & 1:
            tw |= 3 << (2 * k)
    fpu_put16(c, FS_TW, tw)

cdef inline uint32_t sw_summary(uint32_t sw, uint32_t cw) noexcept nogil:
    """FSW with ES and B recomputed from the exception flags and masks, as a load of the status or
    control word leaves them (SDM Vol. 1 §8.1.3.1; measured: FLDENV of flags with ES clear sets it)."""
    sw &= ~<uint32_t>(SW_ES | SW_B)
    if sw & ~cw & SW_EXC:
        sw |= SW_ES | SW_B
    return sw

cdef inline uint32_t cw_load(uint32_t v) noexcept nogil:
    """The control word as FLDCW stores it: bits 13-15 read as 0, bit 6 as 1."""
    return (v & 0x1F3F) | 0x0040

cdef void fpu_rotate(Cpu* c, uint32_t new_top) noexcept nogil:
    """Make the image's ST slots follow a change of TOP: the image holds the registers in stack
    order (slot k = ST(k) = physical register TOP + k), and a load of TOP (FLDENV, FNINIT) keeps
    the physical registers' contents."""
    cdef uint8_t regs[80]
    cdef uint32_t k, old_top = (fpu_sw(c) >> 11) & 7
    if new_top == old_top:
        return
    memcpy(regs, fpu_st(c, 0), 80)
    for k in range(8):
        # new ST(k) is physical new_top + k, which was old ST(new_top + k - old_top)
        memcpy(fpu_st(c, k), &regs[10 * ((new_top + k - old_top) & 7)], 10)

cdef void fpu_init(Cpu* c) noexcept nogil:
    """FNINIT (SDM Vol. 2 FINIT): CW 037FH, SW 0 (TOP 0), every register empty, pointers 0;
    the registers themselves keep their contents."""
    fpu_rotate(c, 0)
    fpu_put16(c, FS_CW, 0x037F)
    fpu_put16(c, FS_SW, 0)
    fpu_put16(c, FS_TW, 0xFFFF)
    c.fpu_fip = 0
    c.fpu_fcs = 0
    c.fpu_fop = 0
    c.fpu_fdp = 0
    c.fpu_fds = 0

cdef void fpu_reset(Cpu* c, bint power_up) noexcept nogil:
    """power_up: the state after RESET (SDM Vol. 3 §9.2, Table 9-1): CW 0040H, SW 0, tag word
    5555H (every register valid, holding +0.0), pointers 0. Otherwise the FNINIT state, as the
    BIOS leaves the FPU when a loader starts a kernel."""
    memset(&c.fpu.b[0], 0, sizeof(x87_image_t))
    fpu_init(c)
    if power_up:
        fpu_put16(c, FS_CW, 0x0040)
        fpu_put16(c, FS_TW, 0x5555)
    c.ferr = 0

cdef inline uint32_t insn_eip(Cpu* c, Insn* i) noexcept nogil:
    """The offset of the instruction's first byte (prefixes included)."""
    return (i.next_eip - i.len) & (0xFFFFFFFFU if c.code32 else 0xFFFF)

cdef inline void fpu_pointers(Cpu* c, Insn* i, uint32_t ea) noexcept nogil:
    """A non-control instruction: FIP/FCS/FOP name it, FDP/FDS its memory operand if it has
    one (SDM Vol. 1 §8.1.8, §8.1.9); a register-only instruction leaves FDP/FDS as they were."""
    c.fpu_fop = i.imm2
    c.fpu_fip = insn_eip(c, i)
    c.fpu_fcs = c.seg[S_CS].sel
    if i.flags & IF_MEM:
        c.fpu_fdp = ea
        c.fpu_fds = c.seg[i.seg].sel
    if c.vring0:
        # bt: the guest kernel runs at real CPL 1 with RPL 1 in CS and SS (monitor.pxi to_real);
        # the pointers hold the selectors the guest loaded, as PUSH CS must show them
        c.fpu_fcs &= 0xFFFC
        if (i.flags & IF_MEM) and i.seg == S_SS:
            c.fpu_fds &= 0xFFFC

cdef int fpu_pending(Cpu* c) noexcept nogil:
    """A waiting instruction finds an unmasked exception pending (FSW.ES).

    CR0.NE = 1: #MF before the instruction (SDM Vol. 3 §6.15, interrupt 16).
    CR0.NE = 0, the PC's MS-DOS compatible path (SDM Vol. 1 Appendix D): the FPU asserts FERR#,
    which the PC latches onto IRQ 13, and the instruction waits for the interrupt. Here the
    first time (cpu.ferr 0 -> 1) the instruction exits before it runs (EXIT_FERR: the machine
    raises IRQ 13); when it is resumed, the interrupt has been taken if the CPU could take it
    (the handler writes port F0h, which drops IRQ 13 and asserts IGNNE#: cpu.ferr = 2, and
    usually clears the exception). An instruction that still finds the exception pending then
    runs ignoring it, as under IGNNE# (0 is returned). Not modelled: with the interrupt masked
    a real CPU would stay frozen at the instruction instead."""
    if c.cr0 & CR0_NE:
        return fault(c, EXC_MF)
    if c.ferr == 0:
        c.ferr = 1
        c.exit_reason = EXIT_FERR
        return RC_EXIT_BEFORE
    return 0

cdef inline void fpu_ferr_idle(Cpu* c) noexcept nogil:
    """No exception pending at a waiting instruction: FERR# is inactive, which releases IGNNE#
    (the latch of IRQ 13 itself holds until port F0h is written)."""
    if c.ferr == 2:
        c.ferr = 0

cdef inline int fpu_nm(Cpu* c) noexcept nogil:
    """CR0.EM or CR0.TS: #NM before any escape instruction (SDM Vol. 3 §2.5, Table 2-2)."""
    return fault(c, EXC_NM)

# --- guest memory: operands of up to 512 bytes -------------------------------------------------

cdef inline int x87_range(Cpu* c, int seg, uint32_t ea, uint32_t n, int write, uint32_t* la) noexcept nogil:
    """The segment checks of an n-byte operand at offset ea: its first and last byte."""
    cdef uint32_t last_la
    if <uint64_t>ea + n - 1 > 0xFFFFFFFFU:
        return seg_fault(c, seg)
    if write:
        if seg_off_w(c, seg, ea, 0, la) or seg_off_w(c, seg, ea + n - 1, 0, &last_la):
            return RC_FAULT
    elif seg_off(c, seg, ea, 0, la) or seg_off(c, seg, ea + n - 1, 0, &last_la):
        return RC_FAULT
    return 0

cdef int x87_read(Cpu* c, uint32_t la, uint32_t n, uint8_t* buf) noexcept nogil:
    cdef uint32_t k = 0, v
    while k + 4 <= n:
        if rd32(c, la + k, &v):
            return RC_FAULT
        buf[k] = v & 0xFF
        buf[k + 1] = (v >> 8) & 0xFF
        buf[k + 2] = (v >> 16) & 0xFF
        buf[k + 3] = v >> 24
        k += 4
    while k < n:
        if rd8(c, la + k, &v):
            return RC_FAULT
        buf[k] = v
        k += 1
    return 0

cdef int x87_write(Cpu* c, uint32_t la, uint32_t n, uint8_t* buf) noexcept nogil:
    """Store n bytes; the caller has run probe_write over them (a store writes all or nothing)."""
    cdef uint32_t k = 0, v
    while k + 4 <= n:
        v = buf[k] | (<uint32_t>buf[k + 1] << 8) | (<uint32_t>buf[k + 2] << 16) | (<uint32_t>buf[k + 3] << 24)
        if wr32(c, la + k, v):
            return RC_FAULT
        k += 4
    while k < n:
        if wr8(c, la + k, buf[k]):
            return RC_FAULT
        k += 1
    return 0

# --- instructions run on the host x87 -----------------------------------------------------------

cdef int h_X87(Cpu* c, Insn* i) noexcept nogil:
    """An escape instruction run on the host x87 (x87_host.h); i.imm holds its class
    (gen_x87.py), i.imm2 its 11-bit opcode (FOP)."""
    cdef uint32_t cls = i.imm
    cdef uint32_t n = cls >> X87_SIZE_SHIFT
    cdef uint32_t key = i.imm2
    cdef uint32_t ea = 0, la = 0, sw, hidden = 0
    cdef uint8_t buf[16]
    cdef uint8_t before[16]
    cdef uint64_t fl = 0
    cdef int rc
    if c.cr0 & (CR0_EM | CR0_TS):
        return fpu_nm(c)
    sw = fpu_sw(c)
    if (cls & X87_WAIT) and (sw & SW_ES):
        rc = fpu_pending(c)
        if rc:
            return rc
        # NE = 0: run it as if IGNNE# were asserted (the pending flags are hidden from the host
        # FPU, which would otherwise trap, and set again after)
        hidden = sw & ~fpu_cw(c) & SW_EXC
    elif c.ferr:
        fpu_ferr_idle(c)
    if i.flags & IF_MEM:
        key = (key & 0x738) | 7
        ea = ea_of(c, i)
        if cls & X87_STORE:
            if x87_range(c, i.seg, ea, n, 1, &la) or probe_write(c, la, n) or x87_read(c, la, n, buf):
                return RC_FAULT
            memcpy(before, buf, n)
        elif x87_range(c, i.seg, ea, n, 0, &la) or x87_read(c, la, n, buf):
            return RC_FAULT
    if cls & X87_FL_IN:
        fl = compute_flags(c)
    if hidden:
        fpu_put16(c, FS_SW, sw & ~(hidden | SW_ES | SW_B))
    x87_host_table[key](&c.fpu, buf, &fl)
    if hidden:
        fpu_put16(c, FS_SW, sw_summary(fpu_sw(c) | hidden, fpu_cw(c)))
    if (cls & X87_STORE) and memcmp(before, buf, n) != 0:
        if x87_write(c, la, n, buf):
            return RC_FAULT
    if cls & X87_FL_OUT:
        set_arith_flags(c, <uint32_t>fl)
    if not (cls & X87_CTL):
        fpu_pointers(c, i, ea)
    elif cls & X87_INIT:
        fpu_init(c)
    return RC_NEXT

cdef int h_X87_UD(Cpu* c, Insn* i) noexcept nogil:
    """A reserved escape encoding: #NM under CR0.EM/TS like every escape, else #UD."""
    if c.cr0 & (CR0_EM | CR0_TS):
        return fpu_nm(c)
    return fault(c, EXC_UD)

cdef int h_FNSTSW_AX(Cpu* c, Insn* i) noexcept nogil:
    """DF E0: AX = FSW; no wait, a control instruction."""
    if c.cr0 & (CR0_EM | CR0_TS):
        return fpu_nm(c)
    setr16(c, R_EAX, fpu_sw(c))
    return RC_NEXT

cdef int h_WAIT(Cpu* c, Insn* i) noexcept nogil:
    """9B FWAIT: #NM if CR0.MP and CR0.TS (SDM Vol. 3 Table 2-2), then a pending unmasked
    exception is taken (#MF, or FERR# with CR0.NE = 0)."""
    if (c.cr0 & (CR0_MP | CR0_TS)) == (CR0_MP | CR0_TS):
        return fault(c, EXC_NM)
    cdef int rc
    if fpu_sw(c) & SW_ES:
        rc = fpu_pending(c)
        return rc if rc else RC_NEXT
    fpu_ferr_idle(c)
    return RC_NEXT

# --- the environment and the whole state: emulated -----------------------------------------------

cdef uint32_t fpu_full_tag(Cpu* c) noexcept nogil:
    """The 16-bit tag word from the abridged one and the registers' contents, as FNSTENV and
    FNSAVE compute it (SDM Vol. 1 §8.1.7, Vol. 2 FXSAVE "FTW"): 00 valid, 01 zero, 10 special
    (NaN, infinity, denormal, unnormal, pseudo-denormal), 11 empty; by physical register."""
    cdef uint32_t top = (fpu_sw(c) >> 11) & 7
    cdef uint32_t ftw = fpu_nonempty(c)
    cdef uint32_t tag = 0, phys, st, t, ex
    cdef uint8_t* r
    cdef uint64_t mant
    for phys in range(8):
        if not (ftw >> phys) & 1:
            t = 3
        else:
            st = (phys - top) & 7
            r = fpu_st(c, st)
            memcpy(&mant, r, 8)
            ex = (r[8] | (<uint32_t>r[9] << 8)) & 0x7FFF
            if ex == 0x7FFF:
                t = 2
            elif ex == 0:
                t = 1 if mant == 0 else 2
            elif not (mant >> 63):
                t = 2
            else:
                t = 0
        tag |= t << (2 * phys)
    return tag

cdef inline uint32_t abridged_tag(uint32_t tw) noexcept nogil:
    cdef uint32_t ftw = 0, k
    for k in range(8):
        if ((tw >> (2 * k)) & 3) != 3:
            ftw |= 1 << k
    return ftw

cdef inline void put_le16(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF

cdef inline void put_le32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = v >> 24

cdef inline uint32_t get_le16(uint8_t* p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8)

cdef inline uint32_t get_le32(uint8_t* p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)

cdef inline bint env_real_format(Cpu* c) noexcept nogil:
    """Real-address and virtual-8086 mode store the real-mode layouts (20-bit linear pointers)."""
    return not c.pe or (c.eflags & FL_VM) != 0

cdef uint32_t fpu_env_store(Cpu* c, uint8_t* out, bint o16, bint real) noexcept nogil:
    """The environment image as FNSTENV stores it (SDM Vol. 1 §8.1.10, Figures 8-9 to 8-12); the
    reserved upper halves of the 32-bit format's words read as FFFFh. Returns its size."""
    cdef uint32_t fip = c.fpu_fip, fdp = c.fpu_fdp
    if real:
        fip = (c.fpu_fcs << 4) + c.fpu_fip
        fdp = (c.fpu_fds << 4) + c.fpu_fdp
    if o16:
        put_le16(out, fpu_cw(c))
        put_le16(out + 2, fpu_sw(c))
        put_le16(out + 4, fpu_full_tag(c))
        if real:
            put_le16(out + 6, fip)
            put_le16(out + 8, ((fip >> 4) & 0xF000) | c.fpu_fop)
            put_le16(out + 10, fdp)
            put_le16(out + 12, (fdp >> 4) & 0xF000)
        else:
            put_le16(out + 6, fip)
            put_le16(out + 8, c.fpu_fcs)
            put_le16(out + 10, fdp)
            put_le16(out + 12, c.fpu_fds)
        return 14
    put_le32(out, 0xFFFF0000U | fpu_cw(c))
    put_le32(out + 4, 0xFFFF0000U | fpu_sw(c))
    put_le32(out + 8, 0xFFFF0000U | fpu_full_tag(c))
    if real:
        put_le32(out + 12, 0xFFFF0000U | (fip & 0xFFFF))
        put_le32(out + 16, ((fip >> 4) & 0x0FFFF000U) | c.fpu_fop)
        put_le32(out + 20, 0xFFFF0000U | (fdp & 0xFFFF))
        put_le32(out + 24, (fdp >> 4) & 0x0FFFF000U)
    else:
        put_le32(out + 12, fip)
        put_le32(out + 16, c.fpu_fcs | (<uint32_t>c.fpu_fop << 16))
        put_le32(out + 20, fdp)
        put_le32(out + 24, 0xFFFF0000U | c.fpu_fds)
    return 28

cdef void fpu_env_load(Cpu* c, uint8_t* src, bint o16, bint real) noexcept nogil:
    """FLDENV: the inverse of fpu_env_store. Only the tag word's empty/non-empty distinction is
    kept (the others are recomputed from the registers when stored); ES and B follow the loaded
    flags and masks."""
    cdef uint32_t cw, sw, tw, w
    if o16:
        cw = get_le16(src)
        sw = get_le16(src + 2)
        tw = get_le16(src + 4)
        if real:
            w = get_le16(src + 8)
            c.fpu_fip = get_le16(src + 6) | ((w & 0xF000) << 4)
            c.fpu_fop = w & 0x7FF
            c.fpu_fcs = 0
            c.fpu_fdp = get_le16(src + 10) | ((get_le16(src + 12) & 0xF000) << 4)
            c.fpu_fds = 0
        else:
            c.fpu_fip = get_le16(src + 6)
            c.fpu_fcs = get_le16(src + 8)
            c.fpu_fdp = get_le16(src + 10)
            c.fpu_fds = get_le16(src + 12)
    else:
        cw = get_le16(src)
        sw = get_le16(src + 4)
        tw = get_le16(src + 8)
        if real:
            w = get_le32(src + 16)
            c.fpu_fip = (get_le32(src + 12) & 0xFFFF) | ((w & 0x0FFFF000U) << 4)
            c.fpu_fop = w & 0x7FF
            c.fpu_fcs = 0
            c.fpu_fdp = (get_le32(src + 20) & 0xFFFF) | ((get_le32(src + 24) & 0x0FFFF000U) << 4)
            c.fpu_fds = 0
        else:
            w = get_le32(src + 16)
            c.fpu_fip = get_le32(src + 12)
            c.fpu_fcs = w & 0xFFFF
            c.fpu_fop = (w >> 16) & 0x7FF
            c.fpu_fdp = get_le32(src + 20)
            c.fpu_fds = get_le16(src + 24)
    cw = cw_load(cw)
    fpu_rotate(c, (sw >> 11) & 7)
    fpu_put16(c, FS_CW, cw)
    fpu_put16(c, FS_SW, sw_summary(sw, cw))
    fpu_set_nonempty(c, abridged_tag(tw))

cdef void fpu_mask_all(Cpu* c) noexcept nogil:
    """After FNSTENV: every exception masked (SDM Vol. 2 FSTENV), so nothing is pending."""
    cdef uint32_t cw = fpu_cw(c) | CW_MASKS
    fpu_put16(c, FS_CW, cw)
    fpu_put16(c, FS_SW, sw_summary(fpu_sw(c), cw))

cdef int x87_env_insn(Cpu* c, Insn* i, uint32_t n, int write, uint32_t* la) noexcept nogil:
    """#NM, the pending-exception check of the waiting ones (FLDENV, FRSTOR), and the operand's
    checks (a store's on every page it touches)."""
    cdef uint32_t ea
    cdef int rc
    if c.cr0 & (CR0_EM | CR0_TS):
        return fpu_nm(c)
    if not write and (fpu_sw(c) & SW_ES):
        rc = fpu_pending(c)
        if rc:
            return rc
    elif not write:
        fpu_ferr_idle(c)
    ea = ea_of(c, i)
    if x87_range(c, i.seg, ea, n, write, la):
        return RC_FAULT
    if write and probe_write(c, la[0], n):
        return RC_FAULT
    return 0

cdef int h_FNSTENV(Cpu* c, Insn* i) noexcept nogil:
    """D9 /6 m14/28byte."""
    cdef uint8_t buf[28]
    cdef uint32_t la
    cdef bint o16 = (i.flags & IF_O16) != 0
    cdef uint32_t n = 14 if o16 else 28
    if x87_env_insn(c, i, n, 1, &la):
        return RC_FAULT
    fpu_env_store(c, buf, o16, env_real_format(c))
    if x87_write(c, la, n, buf):
        return RC_FAULT
    fpu_mask_all(c)
    return RC_NEXT

cdef int h_FLDENV(Cpu* c, Insn* i) noexcept nogil:
    """D9 /4 m14/28byte."""
    cdef uint8_t buf[28]
    cdef uint32_t la
    cdef bint o16 = (i.flags & IF_O16) != 0
    cdef uint32_t n = 14 if o16 else 28
    cdef int rc = x87_env_insn(c, i, n, 0, &la)
    if rc:
        return rc
    if x87_read(c, la, n, buf):
        return RC_FAULT
    fpu_env_load(c, buf, o16, env_real_format(c))
    return RC_NEXT

cdef int h_FNSAVE(Cpu* c, Insn* i) noexcept nogil:
    """DD /6 m94/108byte: the environment, ST0-ST7 (10 bytes each), then FNINIT."""
    cdef uint8_t buf[108]
    cdef uint32_t la, k, env
    cdef bint o16 = (i.flags & IF_O16) != 0
    cdef uint32_t n = 94 if o16 else 108
    if x87_env_insn(c, i, n, 1, &la):
        return RC_FAULT
    env = fpu_env_store(c, buf, o16, env_real_format(c))
    for k in range(8):
        memcpy(&buf[env + 10 * k], fpu_st(c, k), 10)
    if x87_write(c, la, n, buf):
        return RC_FAULT
    fpu_init(c)
    return RC_NEXT

cdef int h_FRSTOR(Cpu* c, Insn* i) noexcept nogil:
    """DD /4 m94/108byte."""
    cdef uint8_t buf[108]
    cdef uint32_t la, k
    cdef bint o16 = (i.flags & IF_O16) != 0
    cdef uint32_t n = 94 if o16 else 108
    cdef uint32_t env = 14 if o16 else 28
    cdef int rc = x87_env_insn(c, i, n, 0, &la)
    if rc:
        return rc
    if x87_read(c, la, n, buf):
        return RC_FAULT
    fpu_env_load(c, buf, o16, env_real_format(c))
    for k in range(8):
        memcpy(fpu_st(c, k), &buf[env + 10 * k], 10)
    return RC_NEXT

cdef void fpu_fx_store(Cpu* c, uint8_t* out) noexcept nogil:
    """Bytes 0-159 of the FXSAVE image (SDM Vol. 2 FXSAVE, Table 3-53, the non-64-bit layout):
    FCW FSW, abridged FTW, FOP, FIP FCS, FDP FDS, MXCSR (its default; this CPU has no SSE, so
    MXCSR_MASK is 0) and ST0-ST7 in 16-byte slots. The XMM area (160-511) is not written."""
    cdef uint32_t k
    memset(out, 0, 160)
    put_le16(out, fpu_cw(c))
    put_le16(out + 2, fpu_sw(c))
    out[4] = fpu_nonempty(c)
    put_le16(out + 6, c.fpu_fop)
    put_le32(out + 8, c.fpu_fip)
    put_le16(out + 12, c.fpu_fcs)
    put_le32(out + 16, c.fpu_fdp)
    put_le16(out + 20, c.fpu_fds)
    put_le32(out + 24, FX_MXCSR_DEFAULT)
    for k in range(8):
        memcpy(&out[32 + 16 * k], fpu_st(c, k), 10)

cdef void fpu_fx_load(Cpu* c, uint8_t* src) noexcept nogil:
    cdef uint32_t k, cw = cw_load(get_le16(src))
    fpu_put16(c, FS_CW, cw)
    fpu_put16(c, FS_SW, sw_summary(get_le16(src + 2), cw))
    fpu_set_nonempty(c, src[4])
    c.fpu_fop = get_le16(src + 6) & 0x7FF
    c.fpu_fip = get_le32(src + 8)
    c.fpu_fcs = get_le16(src + 12)
    c.fpu_fdp = get_le32(src + 16)
    c.fpu_fds = get_le16(src + 20)
    for k in range(8):
        memcpy(fpu_st(c, k), &src[32 + 16 * k], 10)

cdef int x87_fx_insn(Cpu* c, Insn* i, int write, uint32_t* la) noexcept nogil:
    """FXSAVE/FXRSTOR: #NM on CR0.EM or TS; the 512-byte operand must be 16-byte aligned
    (#GP(0)); neither waits for a pending exception (SDM Vol. 2 FXSAVE, FXRSTOR)."""
    if c.cr0 & (CR0_EM | CR0_TS):
        return fpu_nm(c)
    if x87_range(c, i.seg, ea_of(c, i), 512, write, la):
        return RC_FAULT
    if la[0] & 0xF:
        return fault_err(c, EXC_GP, 0)
    if write and probe_write(c, la[0], 512):
        return RC_FAULT
    return 0

cdef int h_FXSAVE(Cpu* c, Insn* i) noexcept nogil:
    """0F AE /0 m512byte."""
    cdef uint8_t buf[160]
    cdef uint32_t la
    if x87_fx_insn(c, i, 1, &la):
        return RC_FAULT
    fpu_fx_store(c, buf)
    if x87_write(c, la, 160, buf):
        return RC_FAULT
    return RC_NEXT

cdef int h_FXRSTOR(Cpu* c, Insn* i) noexcept nogil:
    """0F AE /1 m512byte (the x87 part; there is no SSE state to load)."""
    cdef uint8_t buf[160]
    cdef uint32_t la
    if x87_fx_insn(c, i, 0, &la) or x87_read(c, la, 160, buf):
        return RC_FAULT
    fpu_fx_load(c, buf)
    return RC_NEXT

cdef int select_x87(Cpu* c, Insn* i, uint32_t op, uint32_t modrm) noexcept nogil:
    """D8-DF: the class of the opcode (gen_x87.py) picks the handler. Never ends a block."""
    cdef uint32_t fop = ((op & 7) << 8) | modrm
    cdef uint32_t key = ((fop & 0x738) | 7) if (i.flags & IF_MEM) else fop
    cdef uint32_t cls = x87_class_table[key]
    cdef uint32_t kind = cls & 0xF
    i.imm = cls
    i.imm2 = fop
    if kind == X87_K_HOST:
        i.fn = h_X87
    elif kind == X87_K_FNSTSW_AX:
        i.fn = h_FNSTSW_AX
    elif kind == X87_K_FLDENV:
        i.fn = h_FLDENV
    elif kind == X87_K_FNSTENV:
        i.fn = h_FNSTENV
    elif kind == X87_K_FRSTOR:
        i.fn = h_FRSTOR
    elif kind == X87_K_FNSAVE:
        i.fn = h_FNSAVE
    else:
        i.fn = h_X87_UD
    return 0
