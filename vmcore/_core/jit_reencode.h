/* The JIT's re-encoder: one IA-32 instruction of flat 32-bit code (guest bytes) becomes the x86-64
 * instruction(s) that do the same thing to the pinned registers (jit_emit.h) and the window.
 *
 * IDENT instructions are copied with three changes: a memory operand gets the gs and address-size
 * prefixes (window-relative, 32-bit wrap) and [disp32] is rewritten as SIB-absolute (mod 00 rm 101
 * is RIP-relative in 64-bit mode, SDM Vol. 2 §2.2.1.6); guest ESP becomes r8 through REX.R/REX.B;
 * the one-byte INC/DEC (REX prefixes in 64-bit mode) become FF /0, FF /1. PUSH and POP go through r8d
 * (the guest stack in the window), the store or load first so that a fault leaves ESP as it was.
 * Anything else returns 0: branches end blocks, and what the JIT does not translate (segment and
 * system instructions, string, I/O, x87, DIV/IDIV whose #DE would be a host SIGFPE, 16-bit
 * addressing, CS/FS/GS overrides, REP) runs in the interpreter. */
#ifndef VMCORE_JIT_REENCODE_H
#define VMCORE_JIT_REENCODE_H

#include "jit_emit.h"

typedef struct vmj_form {
    int modrm;          /* has a ModRM byte */
    int imm;            /* immediate bytes; -1: 4, or 2 with an operand-size prefix */
    int reg_gpr;        /* ModRM.reg names a register (0: an opcode extension) */
    int reg_byte;       /* ... a byte register */
    int rm_byte;        /* ModRM.rm, when a register, is a byte register */
    int mem_only;       /* mod 3 is not translatable here */
    int lockable;       /* LOCK is valid with a memory operand (SDM Vol. 2 LOCK) */
} vmj_form;

enum { VMJ_PLAIN = 1, VMJ_INCDEC, VMJ_PUSH, VMJ_POP, VMJ_PUSH_IMM, VMJ_XCHG_EAX, VMJ_MOV_IMM, VMJ_MOFFS,
       VMJ_BSWAP, VMJ_BARE };

static inline void vmj_set(vmj_form* f, int modrm, int imm, int reg_gpr, int reg_byte, int rm_byte) {
    f->modrm = modrm; f->imm = imm; f->reg_gpr = reg_gpr; f->reg_byte = reg_byte; f->rm_byte = rm_byte;
}

/* What kind of instruction opcode (two_byte: after 0F) is, given its ModRM.reg where one exists;
 * 0: not translatable. */
static int vmj_classify(int two_byte, uint8_t op, int ext, vmj_form* f) {
    memset(f, 0, sizeof(*f));
    if (!two_byte) {
        if (op < 0x40 && (op & 7) < 6) {        /* ADD OR ADC SBB AND SUB XOR CMP */
            switch (op & 7) {
            case 0: vmj_set(f, 1, 0, 1, 1, 1); break;
            case 1: vmj_set(f, 1, 0, 1, 0, 0); break;
            case 2: vmj_set(f, 1, 0, 1, 1, 1); break;
            case 3: vmj_set(f, 1, 0, 1, 0, 0); break;
            case 4: vmj_set(f, 0, 1, 0, 0, 0); break;
            default: vmj_set(f, 0, -1, 0, 0, 0); break;
            }
            f->lockable = (op & 7) < 2 && op < 0x38;
            return VMJ_PLAIN;
        }
        if (op >= 0x40 && op <= 0x4F) return VMJ_INCDEC;
        if (op >= 0x50 && op <= 0x57) return VMJ_PUSH;
        if (op >= 0x58 && op <= 0x5F) return VMJ_POP;
        if (op == 0x68 || op == 0x6A) return VMJ_PUSH_IMM;
        if (op >= 0x91 && op <= 0x97) return VMJ_XCHG_EAX;
        if (op >= 0xB8 && op <= 0xBF) return VMJ_MOV_IMM;
        if (op >= 0xA0 && op <= 0xA3) return VMJ_MOFFS;
        switch (op) {
        case 0x69: vmj_set(f, 1, -1, 1, 0, 0); return VMJ_PLAIN;
        case 0x6B: vmj_set(f, 1, 1, 1, 0, 0); return VMJ_PLAIN;
        case 0x80: vmj_set(f, 1, 1, 0, 0, 1); f->lockable = ext != 7; return VMJ_PLAIN;
        case 0x81: vmj_set(f, 1, -1, 0, 0, 0); f->lockable = ext != 7; return VMJ_PLAIN;
        case 0x83: vmj_set(f, 1, 1, 0, 0, 0); f->lockable = ext != 7; return VMJ_PLAIN;
        case 0x84: case 0x88: case 0x8A: vmj_set(f, 1, 0, 1, 1, 1); return VMJ_PLAIN;
        case 0x86: vmj_set(f, 1, 0, 1, 1, 1); f->lockable = 1; return VMJ_PLAIN;
        case 0x85: case 0x89: case 0x8B: vmj_set(f, 1, 0, 1, 0, 0); return VMJ_PLAIN;
        case 0x87: vmj_set(f, 1, 0, 1, 0, 0); f->lockable = 1; return VMJ_PLAIN;
        case 0x8D: vmj_set(f, 1, 0, 1, 0, 0); f->mem_only = 1; return VMJ_PLAIN;    /* LEA */
        case 0x90: case 0x98: case 0x99: case 0xF5: case 0xF8: case 0xF9: case 0xFC: case 0xFD:
            return VMJ_BARE;                    /* NOP CWDE CDQ CMC CLC STC CLD STD */
        case 0xA8: vmj_set(f, 0, 1, 0, 0, 0); return VMJ_PLAIN;
        case 0xA9: vmj_set(f, 0, -1, 0, 0, 0); return VMJ_PLAIN;
        case 0xB0: case 0xB1: case 0xB2: case 0xB3: case 0xB4: case 0xB5: case 0xB6: case 0xB7:
            vmj_set(f, 0, 1, 0, 0, 0); return VMJ_PLAIN;       /* MOV r8, imm8: AH..BH need no REX */
        case 0xC0: vmj_set(f, 1, 1, 0, 0, 1); return VMJ_PLAIN;
        case 0xC1: vmj_set(f, 1, 1, 0, 0, 0); return VMJ_PLAIN;
        case 0xC6: if (ext) return 0; vmj_set(f, 1, 1, 0, 0, 1); return VMJ_PLAIN;
        case 0xC7: if (ext) return 0; vmj_set(f, 1, -1, 0, 0, 0); return VMJ_PLAIN;
        case 0xD0: case 0xD2: vmj_set(f, 1, 0, 0, 0, 1); return VMJ_PLAIN;
        case 0xD1: case 0xD3: vmj_set(f, 1, 0, 0, 0, 0); return VMJ_PLAIN;
        case 0xF6: case 0xF7:
            /* DIV IDIV: #DE is a host SIGFPE, which the window's handler turns into a fault exit
             * (the interpreter then raises the guest's #DE) */
            vmj_set(f, 1, ext < 2 ? (op == 0xF6 ? 1 : -1) : 0, 0, 0, op == 0xF6);
            f->lockable = ext == 2 || ext == 3;
            return VMJ_PLAIN;
        case 0xFE: case 0xFF:
            if (ext > 1) return 0;              /* FF /2../6: control transfers and PUSH */
            vmj_set(f, 1, 0, 0, 0, op == 0xFE); f->lockable = 1;
            return VMJ_PLAIN;
        }
        return 0;
    }
    if (op >= 0x40 && op <= 0x4F) { vmj_set(f, 1, 0, 1, 0, 0); return VMJ_PLAIN; }     /* CMOVcc */
    if (op >= 0x90 && op <= 0x9F) { vmj_set(f, 1, 0, 0, 0, 1); return VMJ_PLAIN; }     /* SETcc */
    if (op >= 0xC8) return VMJ_BSWAP;
    if (op == 0x1F) { if (ext) return 0; vmj_set(f, 1, 0, 0, 0, 0); return VMJ_PLAIN; }    /* NOP r/m */
    switch (op) {
    case 0xA3: case 0xAB: case 0xB3: case 0xBB:
        /* BT* r/m, r: a memory bit offset reaches ea + offset / 8 (SDM BT), in address-size
         * arithmetic: with 67 it wraps at 4 GiB in the window as on IA-32 */
        vmj_set(f, 1, 0, 1, 0, 0); f->lockable = op != 0xA3;
        return VMJ_PLAIN;
    case 0xA4: case 0xAC: vmj_set(f, 1, 1, 1, 0, 0); return VMJ_PLAIN;
    case 0xA5: case 0xAD: case 0xAF: case 0xBC: case 0xBD: case 0xB7: case 0xBF:
        vmj_set(f, 1, 0, 1, 0, 0); return VMJ_PLAIN;
    case 0xB6: case 0xBE: vmj_set(f, 1, 0, 1, 0, 1); return VMJ_PLAIN;
    case 0xB0: case 0xC0: vmj_set(f, 1, 0, 1, 1, 1); f->lockable = 1; return VMJ_PLAIN;
    case 0xB1: case 0xC1: vmj_set(f, 1, 0, 1, 0, 0); f->lockable = 1; return VMJ_PLAIN;
    case 0xBA:
        if (ext < 4) return 0;
        vmj_set(f, 1, 1, 0, 0, 0); f->lockable = ext > 4;
        return VMJ_PLAIN;
    }
    return 0;
}

/* A ModRM operand re-encoded for the host. */
typedef struct vmj_ea {
    uint8_t b[6];       /* host ModRM, SIB, displacement */
    int n;
    int rex;            /* REX.R / REX.B bits it needs (ESP is r8) */
    int mod, reg, rm;   /* reg, rm: the host numbers' low 3 bits */
    int is_mem;
} vmj_ea;

enum { VMJ_REG_KEEP = -1, VMJ_REG_GPR = -2 };

/* Parse the ModRM (+ SIB, displacement) at g[*pi]. reg_as: VMJ_REG_KEEP keeps ModRM.reg (an opcode
 * extension or a byte register), VMJ_REG_GPR maps it as a dword GPR (ESP -> r8), 8..15 puts that host
 * register there instead. rm_gpr: a register rm is a dword GPR (ESP -> r8). 0 when not translatable. */
static int vmj_modrm(const uint8_t* g, int* pi, int avail, int reg_as, int rm_gpr, int mem_only, vmj_ea* e) {
    int i = *pi, mod, reg, rm, k, rex = 0, n = 0;
    uint8_t m;
    if (i >= avail) return 0;
    m = g[i++];
    mod = m >> 6; reg = (m >> 3) & 7; rm = m & 7;
    if (reg_as >= 8) { rex |= 4; reg = reg_as & 7; }
    else if (reg_as == VMJ_REG_GPR && reg == 4) { rex |= 4; reg = 0; }
    e->is_mem = mod != 3;
    if (mod == 3) {
        if (mem_only) return 0;
        if (rm_gpr && rm == 4) { rex |= 1; rm = 0; }
        e->b[n++] = 0xC0 | (reg << 3) | rm;
    } else {
        int disp = mod == 1 ? 1 : mod == 2 ? 4 : 0;
        if (rm == 4) {
            uint8_t sib, base, index, scale;
            if (i >= avail) return 0;
            sib = g[i++];
            scale = sib >> 6; index = (sib >> 3) & 7; base = sib & 7;
            if (base == 4) { rex |= 1; base = 0; }
            if (mod == 0 && base == 5) disp = 4;
            e->b[n++] = (mod << 6) | (reg << 3) | 4;
            e->b[n++] = (scale << 6) | (index << 3) | base;
        } else if (mod == 0 && rm == 5) {
            /* [disp32]: SIB with no base and no index (not RIP-relative) */
            e->b[n++] = (reg << 3) | 4;
            e->b[n++] = 0x25;
            disp = 4;
        } else {
            e->b[n++] = (mod << 6) | (reg << 3) | rm;
        }
        if (i + disp > avail) return 0;
        for (k = 0; k < disp; k++) e->b[n++] = g[i++];
    }
    e->n = n; e->rex = rex; e->mod = mod; e->reg = reg; e->rm = rm;
    *pi = i;
    return 1;
}

/* lea r8d, [r8 + d8]: moves the guest ESP without touching the flags */
static inline void vmj_emit_esp_add(vmj_arena* a, int8_t d) {
    vmj_b(a, 0x45); vmj_b(a, 0x8D); vmj_b(a, 0x40); vmj_b(a, (uint8_t)d);
}

/* Re-encode the instruction at g (avail bytes readable). Returns its guest length, or 0 when it is
 * not translated (nothing emitted then). */
static int vmj_reencode(vmj_arena* a, const uint8_t* g, int avail) {
    int i = 0, opsize16 = 0, lock = 0, two_byte = 0, kind, ext = 0, rex = 0;
    int mod = 0, reg = 0, rm = 0, is_mem = 0, imm_len = 0, n_ea = 0, k;
    uint8_t op, ea[6];                          /* host ModRM, SIB, disp */
    size_t start = a->used;
    vmj_form f;
    if (avail > 15)
        avail = 15;
    for (;; i++) {                              /* prefixes */
        if (i >= avail) return 0;
        op = g[i];
        if (op == 0x66) opsize16 = 1;
        else if (op == 0xF0) lock = 1;
        else if (op == 0x26 || op == 0x36 || op == 0x3E) { }    /* flat ES SS DS: no effect */
        else break;     /* 2E (CS: a write through it is #GP), 64/65 (FS/GS), 67, F2/F3: not translated */
    }
    if (op == 0x0F) {
        two_byte = 1;
        if (++i >= avail) return 0;
        op = g[i];
    }
    i++;
    if (i < avail)
        ext = (g[i] >> 3) & 7;
    kind = vmj_classify(two_byte, op, ext, &f);
    if (!kind)
        return 0;
    if (kind != VMJ_PLAIN) {
        int r = op & 7, hr = vmj_host_reg(op & 7);
        if (lock) return 0;
        switch (kind) {
        case VMJ_BARE:
            if (opsize16) vmj_b(a, 0x66);
            vmj_b(a, op);
            break;
        case VMJ_INCDEC:
            if (opsize16) vmj_b(a, 0x66);
            vmj_rex(a, 0, 0, 0, hr);
            vmj_b(a, 0xFF); vmj_b(a, 0xC0 | (op >= 0x48 ? 8 : 0) | (hr & 7));
            break;
        case VMJ_PUSH:                          /* mov gs:[r8d - 4], r32; lea r8d, [r8 - 4] */
            if (opsize16) return 0;
            vmj_b(a, 0x65); vmj_b(a, 0x67); vmj_rex(a, 0, hr, 0, 8);
            vmj_b(a, 0x89); vmj_b(a, 0x40 | ((hr & 7) << 3)); vmj_b(a, 0xFC);
            vmj_emit_esp_add(a, -4);
            break;
        case VMJ_POP:                           /* mov r14d, gs:[r8d]; lea r8d, [r8 + 4]; mov r32, r14d */
            if (opsize16) return 0;
            vmj_b(a, 0x65); vmj_b(a, 0x67); vmj_b(a, 0x45); vmj_b(a, 0x8B); vmj_b(a, 0x30);
            vmj_emit_esp_add(a, 4);
            vmj_rex(a, 0, 14, 0, hr); vmj_b(a, 0x89); vmj_b(a, 0xC0 | (6 << 3) | (hr & 7));
            break;
        case VMJ_PUSH_IMM: {                    /* mov dword gs:[r8d - 4], imm32; lea r8d, [r8 - 4] */
            uint32_t imm;
            if (opsize16) return 0;
            if (op == 0x6A) {
                if (i + 1 > avail) return 0;
                imm = (uint32_t)(int32_t)(int8_t)g[i]; i += 1;
            } else {
                if (i + 4 > avail) return 0;
                imm = g[i] | (g[i + 1] << 8) | (g[i + 2] << 16) | ((uint32_t)g[i + 3] << 24); i += 4;
            }
            vmj_b(a, 0x65); vmj_b(a, 0x67); vmj_b(a, 0x41); vmj_b(a, 0xC7); vmj_b(a, 0x40); vmj_b(a, 0xFC);
            vmj_u32(a, imm);
            vmj_emit_esp_add(a, -4);
            return a->overflow ? 0 : i;
        }
        case VMJ_XCHG_EAX:                      /* xchg eax, r32 as 87 /r */
            if (opsize16) vmj_b(a, 0x66);
            vmj_rex(a, 0, 0, 0, hr); vmj_b(a, 0x87); vmj_b(a, 0xC0 | (hr & 7));
            break;
        case VMJ_MOV_IMM:
            imm_len = opsize16 ? 2 : 4;
            if (i + imm_len > avail) return 0;
            if (opsize16) vmj_b(a, 0x66);
            vmj_rex(a, 0, 0, 0, hr); vmj_b(a, 0xB8 | (hr & 7));
            for (k = 0; k < imm_len; k++) vmj_b(a, g[i + k]);
            i += imm_len;
            break;
        case VMJ_MOFFS:                         /* with 67, moffs is 32 bits in 64-bit mode too */
            if (i + 4 > avail) return 0;
            if (opsize16) vmj_b(a, 0x66);
            vmj_b(a, 0x65); vmj_b(a, 0x67); vmj_b(a, op);
            for (k = 0; k < 4; k++) vmj_b(a, g[i + k]);
            i += 4;
            break;
        case VMJ_BSWAP:
            if (opsize16) return 0;             /* undefined with 66 (SDM BSWAP) */
            vmj_rex(a, 0, 0, 0, hr); vmj_b(a, 0x0F); vmj_b(a, 0xC8 | (hr & 7));
            (void)r;
            break;
        }
        if (a->overflow) { a->used = start; return 0; }
        return i;
    }
    if (f.modrm) {
        vmj_ea e;
        if (!vmj_modrm(g, &i, avail, f.reg_gpr && !f.reg_byte ? VMJ_REG_GPR : VMJ_REG_KEEP, !f.rm_byte,
                       f.mem_only, &e))
            return 0;
        reg = e.reg; mod = e.mod; rm = e.rm; rex = e.rex; is_mem = e.is_mem; n_ea = e.n;
        memcpy(ea, e.b, sizeof(ea));
        /* with a REX prefix, byte registers 4..7 are SPL..DIL, not AH..BH */
        if (rex && ((f.reg_byte && reg >= 4) || (f.rm_byte && mod == 3 && rm >= 4)))
            return 0;
    }
    if (lock && (!is_mem || !f.lockable))
        return 0;                               /* #UD: the interpreter raises it */
    imm_len = f.imm < 0 ? (opsize16 ? 2 : 4) : f.imm;
    if (i + imm_len > avail)
        return 0;
    if (opsize16) vmj_b(a, 0x66);
    if (lock) vmj_b(a, 0xF0);
    if (is_mem) { vmj_b(a, 0x65); vmj_b(a, 0x67); }
    if (rex) vmj_b(a, 0x40 | rex);
    if (two_byte) vmj_b(a, 0x0F);
    vmj_b(a, op);
    for (k = 0; k < n_ea; k++) vmj_b(a, ea[k]);
    for (k = 0; k < imm_len; k++) vmj_b(a, g[i + k]);
    i += imm_len;
    if (a->overflow) { a->used = start; return 0; }
    return i;
}

#endif
