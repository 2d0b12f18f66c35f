# The decoder: guest bytes -> pre-decoded Insn records (prefixes, ModRM/SIB,
# displacement, immediates, and the handler for the exact operand form).
# It runs once per block; the hot loop only ever sees the records.

# Operand-encoding tables, indexed by opcode (0x000-0x0FF one byte, 0x100-0x1FF after 0F).
cdef uint8_t HAS_MODRM[512]
cdef uint8_t IMM_KIND[512]

cdef enum:
    IMM_NONE = 0
    IMM_B = 1       # imm8
    IMM_W = 2       # imm16
    IMM_Z = 3       # imm16 or imm32 by operand size
    IMM_BS = 4      # imm8 sign-extended to the operand size
    IMM_REL8 = 5    # rel8
    IMM_RELZ = 6    # rel16/32
    IMM_MOFFS = 7   # offset by address size
    IMM_WB = 8      # ENTER iw, ib
    IMM_AP = 9      # far pointer: offset (z) then selector (w)
    IMM_GRP3 = 10   # F6/F7: immediate only for /0 and /1 (TEST)

cdef void set_range(uint8_t* table, int first, int last, uint8_t value) noexcept nogil:
    cdef int k
    for k in range(first, last + 1):
        table[k] = value

cdef void init_decode_tables() noexcept nogil:
    """SDM Vol. 2 Appendix A, opcode maps A-2 (one byte) and A-3 (0F)."""
    cdef int k
    for k in range(512):
        HAS_MODRM[k] = 0
        IMM_KIND[k] = IMM_NONE
    # one-byte map
    for k in range(0, 0x40, 8):
        set_range(HAS_MODRM, k, k + 3, 1)      # ALU Eb,Gb Ev,Gv Gb,Eb Gv,Ev
        IMM_KIND[k + 4] = IMM_B                # AL,Ib
        IMM_KIND[k + 5] = IMM_Z                # eAX,Iz
    set_range(HAS_MODRM, 0x62, 0x63, 1)
    IMM_KIND[0x68] = IMM_Z
    HAS_MODRM[0x69] = 1
    IMM_KIND[0x69] = IMM_Z
    IMM_KIND[0x6A] = IMM_BS
    HAS_MODRM[0x6B] = 1
    IMM_KIND[0x6B] = IMM_BS
    set_range(IMM_KIND, 0x70, 0x7F, IMM_REL8)
    set_range(HAS_MODRM, 0x80, 0x8F, 1)
    IMM_KIND[0x80] = IMM_B
    IMM_KIND[0x81] = IMM_Z
    IMM_KIND[0x82] = IMM_B
    IMM_KIND[0x83] = IMM_BS
    IMM_KIND[0x9A] = IMM_AP
    set_range(IMM_KIND, 0xA0, 0xA3, IMM_MOFFS)
    IMM_KIND[0xA8] = IMM_B
    IMM_KIND[0xA9] = IMM_Z
    set_range(IMM_KIND, 0xB0, 0xB7, IMM_B)
    set_range(IMM_KIND, 0xB8, 0xBF, IMM_Z)
    set_range(HAS_MODRM, 0xC0, 0xC1, 1)
    set_range(IMM_KIND, 0xC0, 0xC1, IMM_B)
    IMM_KIND[0xC2] = IMM_W
    set_range(HAS_MODRM, 0xC4, 0xC7, 1)
    IMM_KIND[0xC6] = IMM_B
    IMM_KIND[0xC7] = IMM_Z
    IMM_KIND[0xC8] = IMM_WB
    IMM_KIND[0xCA] = IMM_W
    IMM_KIND[0xCD] = IMM_B
    set_range(HAS_MODRM, 0xD0, 0xD3, 1)
    set_range(IMM_KIND, 0xD4, 0xD5, IMM_B)
    set_range(HAS_MODRM, 0xD8, 0xDF, 1)
    set_range(IMM_KIND, 0xE0, 0xE3, IMM_REL8)
    set_range(IMM_KIND, 0xE4, 0xE7, IMM_B)
    IMM_KIND[0xE8] = IMM_RELZ
    IMM_KIND[0xE9] = IMM_RELZ
    IMM_KIND[0xEA] = IMM_AP
    IMM_KIND[0xEB] = IMM_REL8
    set_range(HAS_MODRM, 0xF6, 0xF7, 1)
    set_range(IMM_KIND, 0xF6, 0xF7, IMM_GRP3)
    set_range(HAS_MODRM, 0xFE, 0xFF, 1)
    # two-byte map (0F xx)
    set_range(HAS_MODRM, 0x100, 0x103, 1)       # group 6, group 7, LAR, LSL
    set_range(HAS_MODRM, 0x118, 0x11F, 1)      # hint NOPs (0F 1F /0 is the multi-byte NOP)
    set_range(HAS_MODRM, 0x120, 0x123, 1)
    set_range(HAS_MODRM, 0x140, 0x14F, 1)
    set_range(IMM_KIND, 0x180, 0x18F, IMM_RELZ)
    set_range(HAS_MODRM, 0x190, 0x19F, 1)
    cdef int* with_modrm = [0x1A3, 0x1A4, 0x1A5, 0x1AB, 0x1AC, 0x1AD, 0x1AF, 0x1B0, 0x1B1, 0x1B2, 0x1B3,
                             0x1B4, 0x1B5, 0x1B6, 0x1B7, 0x1BA, 0x1BB, 0x1BC, 0x1BD, 0x1BE, 0x1BF, 0x1C0,
                             0x1C1, 0x1C7]
    for k in range(24):
        HAS_MODRM[with_modrm[k]] = 1
    HAS_MODRM[0x1AE] = 1                       # group 15: FXSAVE, FXRSTOR
    IMM_KIND[0x1A4] = IMM_B
    IMM_KIND[0x1AC] = IMM_B
    IMM_KIND[0x1BA] = IMM_B

cdef struct Fetcher:
    uint32_t cs_base
    uint32_t start_eip
    uint32_t pos        # bytes consumed
    int bad             # ran over the model's instruction length limit
    int fetch_fault     # a byte's page did not translate
    uint32_t fault_gla

cdef inline uint32_t next_u8(Cpu* c, Fetcher* f) noexcept nogil:
    cdef uint32_t gla = f.cs_base + f.start_eip + f.pos
    cdef int v = fetch8(c, gla)
    if v < 0:
        if not f.fetch_fault:
            f.fetch_fault = 1
            f.fault_gla = gla
        v = 0
    f.pos += 1
    if f.pos > c.max_insn_len:
        f.bad = 1
    return v

cdef inline uint32_t next_u16(Cpu* c, Fetcher* f) noexcept nogil:
    cdef uint32_t lo = next_u8(c, f)
    return lo | (next_u8(c, f) << 8)

cdef inline uint32_t next_u32(Cpu* c, Fetcher* f) noexcept nogil:
    cdef uint32_t lo = next_u16(c, f)
    return lo | (next_u16(c, f) << 16)

cdef void decode_modrm(Cpu* c, Fetcher* f, Insn* i, uint32_t modrm, bint a16) noexcept nogil:
    """Fill rm/index/scale/disp/seg from ModRM (+ SIB, displacement). SDM Vol. 2 §2.1.5."""
    cdef uint32_t mod = modrm >> 6
    cdef uint32_t rm = modrm & 7
    cdef uint32_t sib, base
    i.reg = (modrm >> 3) & 7
    if mod == 3:
        i.rm = rm
        return
    i.flags |= IF_MEM
    i.index = R_ZERO
    i.scale = 0
    i.disp = 0
    if a16:
        # BX+SI BX+DI BP+SI BP+DI SI DI BP BX (Table 2-1)
        i.flags |= IF_A16
        if rm == 0 or rm == 1 or rm == 7:
            i.rm = R_EBX
        elif rm == 2 or rm == 3 or rm == 6:
            i.rm = R_EBP
        elif rm == 4:
            i.rm = R_ESI
        else:
            i.rm = R_EDI
        if rm < 4:
            i.index = R_ESI if (rm & 1) == 0 else R_EDI
        i.seg = S_SS if (rm == 2 or rm == 3 or rm == 6) else S_DS
        if mod == 0 and rm == 6:
            i.rm = R_ZERO
            i.seg = S_DS
            i.disp = next_u16(c, f)
        elif mod == 1:
            i.disp = <uint32_t><int32_t><int8_t>next_u8(c, f)
        elif mod == 2:
            i.disp = next_u16(c, f)
        return
    i.seg = S_DS
    if rm == 4:
        sib = next_u8(c, f)
        base = sib & 7
        i.scale = sib >> 6
        if ((sib >> 3) & 7) != 4:
            i.index = (sib >> 3) & 7
        if base == 5 and mod == 0:
            i.rm = R_ZERO
            i.disp = next_u32(c, f)
        else:
            i.rm = base
            if base == R_ESP or base == R_EBP:
                i.seg = S_SS
    elif rm == 5 and mod == 0:
        i.rm = R_ZERO
        i.disp = next_u32(c, f)
    else:
        i.rm = rm
        if rm == R_EBP:
            i.seg = S_SS
    if mod == 1:
        i.disp = <uint32_t><int32_t><int8_t>next_u8(c, f)
    elif mod == 2:
        i.disp = next_u32(c, f)

cdef inline uint32_t imm_of_size(Cpu* c, Fetcher* f, int sz) noexcept nogil:
    if sz == 0:
        return next_u8(c, f)
    if sz == 1:
        return next_u16(c, f)
    return next_u32(c, f)

cdef int decode_insn(Cpu* c, uint32_t cs_base, uint32_t eip, Insn* i) noexcept nogil:
    """Decode the instruction at cs_base + eip into *i. Returns 1 if it ends a block."""
    cdef Fetcher f
    cdef uint32_t b, op, modrm = 0
    cdef bint o16 = not c.code32
    cdef bint a16 = not c.code32
    cdef int seg_override = -1
    cdef int rep = 0
    cdef bint lock = False
    cdef int kind, sz, vs
    f.cs_base = cs_base
    f.start_eip = eip
    f.pos = 0
    f.bad = 0
    f.fetch_fault = 0
    i.flags = 0
    i.reg = 0
    i.rm = 0
    i.index = R_ZERO
    i.scale = 0
    i.seg = S_DS
    i.disp = 0
    i.imm = 0
    i.imm2 = 0
    i.op = 0
    # prefixes (SDM Vol. 2 §2.1.1)
    while True:
        b = next_u8(c, &f)
        if b == 0x66:
            o16 = c.code32
        elif b == 0x67:
            a16 = c.code32
        elif b == 0xF3:
            rep = IF_REP
        elif b == 0xF2:
            rep = IF_REPNE
        elif b == 0xF0:
            lock = True     # a single CPU is atomic anyway; only validity is checked
        elif b == 0x26:
            seg_override = S_ES
        elif b == 0x2E:
            seg_override = S_CS
        elif b == 0x36:
            seg_override = S_SS
        elif b == 0x3E:
            seg_override = S_DS
        elif b == 0x64 and c.last_seg == S_GS:
            seg_override = S_FS
        elif b == 0x65 and c.last_seg == S_GS:
            seg_override = S_GS
        else:
            break
        if f.bad:
            break
    op = b
    if op == 0x0F:
        op = 0x100 | next_u8(c, &f)
    if o16:
        i.flags |= IF_O16
    i.flags |= rep
    vs = 1 if o16 else 2
    if HAS_MODRM[op]:
        modrm = next_u8(c, &f)
        if 0x120 <= op <= 0x123:
            modrm |= 0xC0       # MOV CRn/DRn: always register operands (SDM Vol. 2 MOV CR)
        decode_modrm(c, &f, i, modrm, a16)
    elif a16:
        i.flags |= IF_A16
    if seg_override >= 0:
        i.seg = seg_override
    kind = IMM_KIND[op]
    if kind == IMM_B:
        i.imm = next_u8(c, &f)
    elif kind == IMM_W:
        i.imm = next_u16(c, &f)
    elif kind == IMM_Z:
        i.imm = imm_of_size(c, &f, vs)
    elif kind == IMM_BS:
        i.imm = <uint32_t><int32_t><int8_t>next_u8(c, &f) & SIZE_MASK[vs]
    elif kind == IMM_REL8:
        i.disp = <uint32_t><int32_t><int8_t>next_u8(c, &f)
    elif kind == IMM_RELZ:
        i.disp = imm_of_size(c, &f, vs)
        if o16:
            i.disp = <uint32_t><int32_t><int16_t>i.disp
    elif kind == IMM_MOFFS:
        i.disp = next_u16(c, &f) if a16 else next_u32(c, &f)
    elif kind == IMM_WB:
        i.imm = next_u16(c, &f)
        i.imm2 = next_u8(c, &f)
    elif kind == IMM_AP:
        i.imm = imm_of_size(c, &f, vs)
        i.imm2 = next_u16(c, &f)
    elif kind == IMM_GRP3 and ((modrm >> 3) & 7) < 2:
        i.imm = imm_of_size(c, &f, 0 if op == 0xF6 else vs)
    i.len = f.pos
    i.next_eip = eip + f.pos
    if not c.code32:
        i.next_eip &= 0xFFFF
    if kind == IMM_REL8 or kind == IMM_RELZ:
        i.disp = i.next_eip + i.disp
        if o16:
            i.disp &= 0xFFFF
    if not c.code32 and <uint64_t>eip + f.pos - 1 > c.seg[S_CS].limit:
        # 16-bit code running past its CS limit (an instruction at IP 0xFFFF that continues): #GP(0),
        # never a wrap to IP 0 (SDM Vol. 3 §20.1.4 real-mode limit checks; 80286 "segment overrun")
        i.len = 0
        i.next_eip = eip
        i.fn = h_CODE_LIMIT
        return 1
    if f.fetch_fault:
        # part of the instruction lies in a page that does not translate: #PF when it runs
        i.len = 0
        i.next_eip = eip
        i.imm = f.fault_gla
        i.fn = h_FETCH_FAULT
        return 1
    if f.bad:
        # too long (15 bytes; 10 on the 286): #GP(0) (SDM Vol. 2 §2.3.11)
        i.len = c.max_insn_len
        i.next_eip = eip + i.len
        i.fn = h_LONG_INSN
        return 1
    if lock and c.lock_ud and not lockable(op, modrm, (i.flags & IF_MEM) != 0):
        i.fn = h_UD         # LOCK on anything but a read-modify-write of memory (SDM Vol. 2 LOCK)
        return 1
    ends = select_handler(c, i, op, modrm, vs)
    if changes_mode(i.fn):
        i.flags |= IF_MODE
    return ends

cdef bint changes_mode(handler_t fn) noexcept nogil:
    """Handlers that may change what decoding depends on (mode_key): segment registers,
    CR0, EFLAGS.VM and TF, the privilege level."""
    return (fn == h_POP_SEG or fn == h_MOV_SEG_E or fn == h_LxS or fn == h_FAR_ptr or fn == h_FAR_mem
            or fn == h_RETF or fn == h_IRET or fn == h_POPF or fn == h_MOV_CR or fn == h_LMSW
            or fn == h_SYSENTER or fn == h_SYSEXIT)

cdef bint lockable(uint32_t op, uint32_t modrm, bint mem) noexcept nogil:
    """The instructions LOCK may prefix, with a memory destination (SDM Vol. 2 "LOCK")."""
    cdef uint32_t reg = (modrm >> 3) & 7
    if not mem:
        return False
    if op < 0x40 and (op & 7) < 2 and (op >> 3) != 7:
        return True                         # ADD OR ADC SBB AND SUB XOR Ev,Gv / Eb,Gb
    if 0x80 <= op <= 0x83:
        return reg != 7                     # group 1 except CMP
    if op == 0x86 or op == 0x87:
        return True                         # XCHG
    if op == 0xF6 or op == 0xF7:
        return reg == 2 or reg == 3         # NOT, NEG
    if op == 0xFE or op == 0xFF:
        return reg < 2                      # INC, DEC
    if op == 0x1AB or op == 0x1B3 or op == 0x1BB or op == 0x1C0 or op == 0x1C1 or op == 0x1B0 or op == 0x1B1:
        return True                         # BTS BTR BTC XADD CMPXCHG
    if op == 0x1BA:
        return reg >= 5
    if op == 0x1C7:
        return reg == 1                     # CMPXCHG8B
    return False

cdef int h_FETCH_FAULT(Cpu* c, Insn* i) noexcept nogil:
    cdef uint32_t gpa
    if translate(c, i.imm, &gpa):
        return RC_FAULT
    # the page has been mapped since this block was decoded: decode it again
    if c.cur_block != NULL:
        kill_block(c, c.cur_block)
    c.eip = i.next_eip
    return RC_RESTART

cdef int h_CODE_LIMIT(Cpu* c, Insn* i) noexcept nogil:
    return fault_err(c, EXC_GP, 0)

cdef int h_LONG_INSN(Cpu* c, Insn* i) noexcept nogil:
    if c.long_insn_vector == EXC_GP:
        return fault_err(c, EXC_GP, 0)
    return fault(c, c.long_insn_vector)

cdef inline bint flat_stack(Cpu* c) noexcept nogil:
    """A flat SS with a 32-bit stack pointer (both part of the decode mode)."""
    return c.seg[S_SS].flat and c.ss32

cdef inline int form(Cpu* c, Insn* i) noexcept nogil:
    """The generated tables' last index: 0 memory, 1 register, 2 memory in a flat segment
    (the segment's flatness is part of the decode mode, so the block is keyed by it)."""
    if not (i.flags & IF_MEM):
        return 1
    return 2 if c.seg[i.seg].flat else 0

cdef int select_handler(Cpu* c, Insn* i, uint32_t op, uint32_t modrm, int vs) noexcept nogil:
    """Pick the handler for the operand form. Returns 1 if the instruction ends a block."""
    cdef uint32_t reg = (modrm >> 3) & 7
    cdef int fm = form(c, i)
    cdef int sz
    cdef bint mem = (i.flags & IF_MEM) != 0
    i.fn = h_UD
    if op < 0x40 and (op & 7) < 6:
        # ALU: 00-05 ADD ... 38-3D CMP
        sz = 0 if (op & 1) == 0 else vs
        if (op & 7) < 2:
            i.fn = ALU_H[op >> 3][sz][0 + fm]         # E,G
        elif (op & 7) == 2 or (op & 7) == 3:
            i.fn = ALU_H[op >> 3][sz][3 + fm]         # G,E
        else:
            i.rm = R_EAX
            i.fn = ALU_H[op >> 3][0 if (op & 7) == 4 else vs][7]    # AL/eAX, I: E,I with a register
        return 0
    if op == 0x27 or op == 0x2F:
        i.op = 1 if op == 0x2F else 0
        i.fn = h_DAA_DAS
        return 0
    if op == 0x37 or op == 0x3F:
        i.op = 1 if op == 0x3F else 0
        i.fn = h_AAA_AAS
        return 0
    if op in (0x06, 0x0E, 0x16, 0x1E):
        i.op = op >> 3
        i.fn = h_PUSH_SEG
        return 0
    if 0x40 <= op <= 0x4F:
        i.rm = op & 7
        i.fn = UNARY_H[(op >> 3) & 1][vs][1]
        return 0
    if 0x50 <= op <= 0x5F:
        i.reg = op & 7
        if op < 0x58:
            i.fn = h_PUSH_r16 if vs == 1 else (h_PUSH_r32_flat if flat_stack(c) else h_PUSH_r32)
        else:
            i.fn = h_POP_r16 if vs == 1 else (h_POP_r32_flat if flat_stack(c) else h_POP_r32)
        return 0
    if op == 0x60:
        i.fn = h_PUSHA
        return 0
    if op == 0x61:
        i.fn = h_POPA
        return 0
    if op == 0x68 or op == 0x6A:
        i.fn = h_PUSH_I
        return 0
    if op == 0x69 or op == 0x6B:
        i.op = 1
        i.fn = h_IMUL_GvEv
        return 0
    if 0x70 <= op <= 0x7F:
        i.fn = JCC_H[op & 0xF]
        return 1
    if 0x80 <= op <= 0x83:
        sz = 0 if (op & 1) == 0 else vs
        i.fn = ALU_H[reg][sz][6 + fm]
        return 0
    if op == 0x84 or op == 0x85:
        i.fn = ALU_H[8][0 if op == 0x84 else vs][fm]
        return 0
    if op == 0x86 or op == 0x87:
        i.op = 0 if op == 0x86 else vs
        i.fn = h_XCHG
        return 0
    if 0x88 <= op <= 0x8B:
        sz = 0 if (op & 1) == 0 else vs
        if op == 0x89 and mem and vs == 2 and not (i.flags & IF_A16):
            i.fn = h_MOV_d_store_flat if c.seg[i.seg].flat else h_MOV_d_store
        elif op == 0x8B and mem and vs == 2 and not (i.flags & IF_A16):
            i.fn = h_MOV_d_load_flat if c.seg[i.seg].flat else h_MOV_d_load
        elif op <= 0x89:
            i.fn = MOV_EG_H[sz][fm]
        else:
            i.fn = MOV_GE_H[sz][fm]
        return 0
    if op == 0x8C and reg <= c.last_seg:
        i.fn = h_MOV_E_SEG
        return 0
    if op == 0x8D:
        if not mem:
            return 1
        i.fn = h_LEA_d if (vs == 2 and not (i.flags & IF_A16)) else h_LEA
        return 0
    if op == 0x8F:
        if reg != 0:
            return 1
        i.fn = h_POP_E
        return 0
    if 0x90 <= op <= 0x97:
        # XCHG eAX, r (F3 90 is PAUSE: a NOP here)
        if op == 0x90:
            i.fn = h_NOP
            return 0
        i.reg = op & 7
        i.rm = R_EAX
        i.op = vs
        i.fn = h_XCHG
        return 0
    if op == 0x98:
        i.fn = h_CBW
        return 0
    if op == 0x99:
        i.fn = h_CWD
        return 0
    if op == 0x9C:
        i.fn = h_PUSHF
        return 0
    if op == 0x9D:
        i.fn = h_POPF
        return 1
    if op == 0x9E:
        i.fn = h_SAHF
        return 0
    if op == 0x9F:
        i.fn = h_LAHF
        return 0
    if 0xA0 <= op <= 0xA3:
        i.op = op & 3
        i.imm2 = 0 if (op & 1) == 0 else vs
        i.fn = h_MOV_moffs
        return 0
    if 0xA4 <= op <= 0xAF and op != 0xA8 and op != 0xA9:
        # MOVS CMPS . . STOS LODS SCAS; the destination is always ES:EDI
        sz = (op - 0xA4) >> 1
        i.op = sz if sz < 2 else sz - 1
        i.imm2 = 0 if (op & 1) == 0 else vs
        i.fn = h_STRING
        return 0
    if op == 0xA8 or op == 0xA9:
        i.rm = R_EAX
        i.fn = ALU_H[8][0 if op == 0xA8 else vs][7]
        return 0
    if 0xB0 <= op <= 0xB7:
        i.rm = op & 7
        i.fn = MOV_EI_H[0][1]
        return 0
    if 0xB8 <= op <= 0xBF:
        i.reg = op & 7
        i.rm = op & 7
        i.fn = h_MOV_r32_I if vs == 2 else MOV_EI_H[1][1]
        return 0
    if op == 0xC0 or op == 0xC1 or 0xD0 <= op <= 0xD3:
        sz = 0 if (op & 1) == 0 else vs
        if op == 0xD0 or op == 0xD1:
            i.imm = 1
        i.fn = SHIFT_H[reg][sz][1 if op >= 0xD2 else 0][fm]
        return 0
    if op == 0xC2 or op == 0xC3:
        if op == 0xC3 and vs == 2:
            i.fn = h_RET32_flat if flat_stack(c) else h_RET32
        else:
            i.fn = h_RET
        return 1
    if op == 0xC6 or op == 0xC7:
        if reg != 0:
            return 1
        i.fn = MOV_EI_H[0 if op == 0xC6 else vs][fm]
        return 0
    if op == 0xC8:
        i.fn = h_ENTER
        return 0
    if op == 0xC9:
        i.fn = h_LEAVE
        return 0
    if op == 0xCC or op == 0xCD or op == 0xCE:
        if op == 0xCC:
            i.imm = EXC_BP
            i.imm2 = 1
        elif op == 0xCE:
            i.imm = EXC_OF
            i.op = 1
        i.fn = h_INT
        return 1
    if op == 0xD4:
        i.fn = h_AAM
        return 0
    if op == 0xD5:
        i.fn = h_AAD
        return 0
    if op == 0xD7:
        i.fn = h_XLAT
        return 0
    if 0xE0 <= op <= 0xE3:
        i.op = 3 if op == 0xE3 else 2 - (op - 0xE0)
        i.fn = h_LOOP
        return 1
    if 0xE4 <= op <= 0xE7 or 0xEC <= op <= 0xEF:
        i.op = (2 if op < 0xE8 else 0) | ((op >> 1) & 1)
        i.imm2 = 0 if (op & 1) == 0 else vs
        i.fn = h_IO
        return 1
    if op == 0xE8:
        if vs == 2:
            i.fn = h_CALL_rel32_flat if flat_stack(c) else h_CALL_rel32
        else:
            i.fn = h_CALL_rel
        return 1
    if op == 0xE9 or op == 0xEB:
        i.fn = h_JMP_rel
        return 1
    if op == 0xF4:
        i.fn = h_HLT
        return 1
    if op == 0xF5 or 0xF8 <= op <= 0xF9 or 0xFC <= op <= 0xFD:
        i.op = op & 0xF
        i.fn = h_FLAG_OP
        return 0
    if op == 0xFA or op == 0xFB:
        i.op = op & 1
        i.fn = h_CLI_STI
        return 1
    if op == 0xF6 or op == 0xF7:
        sz = 0 if op == 0xF6 else vs
        i.op = sz
        if reg < 2:
            i.fn = ALU_H[8][sz][6 + fm]
        elif reg == 2:
            i.fn = UNARY_H[2][sz][fm]
        elif reg == 3:
            i.fn = UNARY_H[3][sz][fm]
        elif reg == 4:
            i.fn = h_MUL_E
        elif reg == 5:
            i.fn = h_IMUL_E
        elif reg == 6:
            i.fn = h_DIV_E
        else:
            i.fn = h_IDIV_E
        return 0
    if op == 0xFE:
        if reg > 1:
            return 1
        i.fn = UNARY_H[reg][0][fm]
        return 0
    if op == 0xFF:
        if reg < 2:
            i.fn = UNARY_H[reg][vs][fm]
            return 0
        if reg == 2:
            i.fn = h_CALL_E
            return 1
        if reg == 4:
            i.fn = h_JMP_E
            return 1
        if reg == 6:
            i.fn = h_PUSH_E
            return 0
        if (reg == 3 or reg == 5) and mem:
            i.op = 1 if reg == 3 else 0
            i.fn = h_FAR_mem
        return 1
    if op == 0x07 or op == 0x17 or op == 0x1F:
        i.op = op >> 3
        i.fn = h_POP_SEG
        return 1
    if op == 0x8C or op == 0x8E:
        if (op == 0x8E and reg == S_CS) or reg > c.last_seg:
            return 1
        i.fn = h_MOV_SEG_E
        return 1
    if op == 0xC4 or op == 0xC5:
        if not mem:
            return 1
        i.op = S_ES if op == 0xC4 else S_DS
        i.fn = h_LxS
        return 1
    if op == 0xEA or op == 0x9A:
        i.op = 1 if op == 0x9A else 0
        i.fn = h_FAR_ptr
        return 1
    if op == 0xCA or op == 0xCB:
        i.fn = h_RETF
        return 1
    if op == 0xCF:
        i.fn = h_IRET
        return 1
    if op == 0x62:
        if not mem:
            return 1
        i.fn = h_BOUND
        return 0
    if op == 0x6C or op == 0x6D:
        i.imm2 = 0 if op == 0x6C else vs
        i.fn = h_INS
        return 1
    if op == 0x6E or op == 0x6F:
        i.imm2 = 0 if op == 0x6E else vs
        i.fn = h_OUTS
        return 1
    if op == 0xD6:
        i.fn = h_SALC
        return 0
    if 0xD8 <= op <= 0xDF:
        return select_x87(c, i, op, modrm)
    if op == 0x9B:
        i.fn = h_WAIT
        return 0
    if op == 0x63:
        if not c.pe or (c.eflags & FL_VM):
            return 1                    # ARPL is #UD in real and virtual-8086 mode
        i.fn = h_ARPL
        return 0
    if op >= 0x100:
        return select_0f(c, i, op & 0xFF, reg, fm, vs)
    # valid one-byte opcodes whose semantics belong to the system architecture
    # (segment loads, far transfers, IRET, string I/O, x87, BOUND, ARPL, LES/LDS)
    if op == 0xF1:
        i.imm = EXC_DB              # INT1 / ICEBP: a #DB trap that skips the gate's DPL check
        i.imm2 = 2
        i.fn = h_INT
    return 1

cdef int select_0f(Cpu* c, Insn* i, uint32_t op, uint32_t reg, int fm, int vs) noexcept nogil:
    cdef bint mem = (i.flags & IF_MEM) != 0
    if op == 0x0B or op == 0xFF or op == 0xB9:
        return 1                                  # UD2 / UD0 / UD1: #UD
    if op == 0x1F or (0x18 <= op <= 0x1E):
        i.fn = h_NOP                              # multi-byte NOP and hint NOPs
        return 0
    if 0x40 <= op <= 0x4F:
        i.fn = CMOV_H[op & 0xF][vs - 1][fm]
        return 0
    if 0x80 <= op <= 0x8F:
        i.fn = JCC_H[op & 0xF]
        return 1
    if 0x90 <= op <= 0x9F:
        i.fn = SETCC_H[op & 0xF][fm]
        return 0
    if op == 0xA0 or op == 0xA8:
        i.op = S_FS if op == 0xA0 else S_GS
        i.fn = h_PUSH_SEG
        return 0
    if op == 0xA1 or op == 0xA9:
        i.op = S_FS if op == 0xA1 else S_GS
        i.fn = h_POP_SEG
        return 1
    if op == 0xB2 or op == 0xB4 or op == 0xB5:
        if not mem:
            return 1
        i.op = S_SS if op == 0xB2 else (S_FS if op == 0xB4 else S_GS)
        i.fn = h_LxS
        return 1
    if op == 0xA2:
        i.fn = h_CPUID
        return 0
    if op == 0xAE:
        if mem and reg == 0:
            i.fn = h_FXSAVE
        elif mem and reg == 1:
            i.fn = h_FXRSTOR
        return 0                                  # the rest of group 15 is SSE: #UD
    if op == 0x31:
        i.fn = h_RDTSC
        return 0
    if op == 0x33:
        i.fn = h_RDPMC
        return 0
    if op in (0xA3, 0xAB, 0xB3, 0xBB):
        i.op = (op >> 3) & 3
        i.fn = h_BT
        return 0
    if op == 0xBA:
        if reg < 4:
            return 1
        i.op = reg - 4
        i.imm2 = 1
        i.fn = h_BT
        return 0
    if op in (0xA4, 0xA5, 0xAC, 0xAD):
        i.op = (1 if op >= 0xAC else 0) | (2 if op & 1 else 0)
        i.fn = h_SHxD
        return 0
    if op == 0xAF:
        i.op = 0
        i.fn = h_IMUL_GvEv
        return 0
    if op == 0xB0 or op == 0xB1:
        i.op = 0 if op == 0xB0 else vs
        i.fn = h_CMPXCHG
        return 0
    if op == 0xC0 or op == 0xC1:
        i.op = 0 if op == 0xC0 else vs
        i.fn = h_XADD
        return 0
    if op == 0xC7:
        if reg != 1 or not mem:
            return 1
        i.fn = h_CMPXCHG8B
        return 0
    if op == 0xB6 or op == 0xB7 or op == 0xBE or op == 0xBF:
        i.op = op & 1
        if fm == 2:
            i.fn = h_MOVSX_f if op >= 0xBE else h_MOVZX_f
        else:
            i.fn = h_MOVSX if op >= 0xBE else h_MOVZX
        return 0
    if op == 0xBC or op == 0xBD:
        i.op = op & 1
        i.fn = h_BSF_BSR
        return 0
    if 0xC8 <= op <= 0xCF:
        i.reg = op & 7
        i.fn = h_BSWAP
        return 0
    return select_system(c, i, op, reg, mem)

cdef int select_system(Cpu* c, Insn* i, uint32_t op, uint32_t reg, bint mem) noexcept nogil:
    """The 0F-map system instructions (SDM Vol. 3 §2.8). Every one ends its block: they
    can change the mode, the translations or the privilege level."""
    if op == 0x00:
        if not c.pe or (c.eflags & FL_VM):
            return 1                                # #UD in real and virtual-8086 mode
        if reg < 2:
            i.op = reg
            i.fn = h_SLDT_STR
        elif reg < 4:
            i.op = reg - 2
            i.fn = h_LLDT_LTR
        elif reg < 6:
            i.op = reg - 4
            i.fn = h_VERR_VERW
        return 1
    if op == 0x01:
        if reg < 2 and mem:
            i.op = reg
            i.fn = h_SxDT
        elif reg < 4 and mem:
            i.op = reg - 2
            i.fn = h_LxDT
        elif reg == 4:
            i.fn = h_SMSW
        elif reg == 6:
            i.fn = h_LMSW
        elif reg == 7 and mem:
            i.fn = h_INVLPG
        return 1
    if op == 0x02 or op == 0x03:
        if c.pe and not (c.eflags & FL_VM):
            i.op = op & 1
            i.fn = h_LAR_LSL
        return 1
    if op == 0x06:
        i.fn = h_CLTS
    elif op == 0x08 or op == 0x09:
        i.fn = h_CACHE
    elif op == 0x20 or op == 0x22:
        i.op = 1 if op == 0x22 else 0
        i.fn = h_MOV_CR
    elif op == 0x21 or op == 0x23:
        i.op = 1 if op == 0x23 else 0
        i.fn = h_MOV_DR
    elif op == 0x30:
        i.fn = h_WRMSR
    elif op == 0x32:
        i.fn = h_RDMSR
    elif op == 0x34:
        i.fn = h_SYSENTER
    elif op == 0x35:
        i.fn = h_SYSEXIT
    return 1
