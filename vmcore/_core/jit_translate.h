/* The JIT's block translator (ARCHITECTURE.md, "The native engine"): a guest block of flat 32-bit
 * code becomes host code in the arena, laid out as
 *
 *     entry:  lea r13, [r13 - n]            charge the block's n guest instructions
 *             sarx r14, r13, r12            r12 = 63: r14 = -1 when the budget is overdrawn
 *             mov r14, [r15 + r14 * 8]      ... which reads the guard page below the state: a trap
 *             body                          each guest instruction re-encoded (jit_reencode.h)
 *             terminator                    the block's branch, to exit stubs
 *
 * All three entry instructions leave the host flags (= the guest's) alone. An exit stub writes the
 * guest target and its own offset to the state and jumps to the common exit; the run loop may then
 * patch the stub's first bytes into a direct jump to the target block (chaining). Indirect branches
 * (RET, JMP/CALL r/m32) exit with the target in r14d.
 *
 * Every guest instruction's first host byte is recorded in a side table, so a fault at any host RIP
 * names the guest instruction that was running and how many of the block's instructions retired. */
#ifndef VMCORE_JIT_TRANSLATE_H
#define VMCORE_JIT_TRANSLATE_H

#include "jit_emit.h"
#include "jit_reencode.h"

#define VMJ_NO_STUB 0xFFFFFFFFU
#define VMJ_STUB_LEN 21
/* The indirect-branch table: VMJ_IND_SIZE host addresses right after the state's page (r15 +
 * VMJ_IND_OFF), indexed by the target EIP's low 16 bits (MOVZX: no flags). A slot holds the indirect
 * entry of a translated block, which checks the whole EIP itself, or the miss exit. */
#define VMJ_IND_OFF 0x1000
#define VMJ_IND_SIZE 65536

typedef uint64_t vmj_ind_entry;

#define VMJ_IND_USED_MAX 1024

enum { VMJ_EXIT_STUB = 3 };

/* One side table row: the host code of a guest instruction starts at host_off. */
typedef struct vmj_side {
    uint32_t host_off;
    uint32_t eip;
    uint32_t jblock;        /* the translated block's index */
    uint32_t index;         /* the instruction's position in it */
} vmj_side;

/* One translated block. */
typedef struct vmj_jblock {
    uint32_t eip;
    uint32_t ninsn;         /* guest instructions it charges */
    uint32_t entry_off;     /* arena offset of its entry */
    uint32_t ind_off;       /* ... of its indirect entry (the EIP check before the entry) */
    uint32_t end_off;
} vmj_jblock;

typedef struct vmj_cache {
    vmj_arena arena;
    vmj_side* side;
    uint32_t n_side, cap_side;
    vmj_jblock* blocks;
    uint32_t n_blocks, cap_blocks;
    uint32_t enter_off, exit_off, fault_off;    /* the trampolines at the start of the arena */
    uint32_t ind_off, ind_miss_off;             /* the indirect-branch lookup and its miss exit */
    vmj_ind_entry* ind;                         /* its table (VMJ_IND_SIZE entries) */
    uint32_t* patched;                          /* stubs patched into jumps: arena offset, target eip */
    uint32_t n_patched, cap_patched;
    uint32_t ind_used[VMJ_IND_USED_MAX];        /* the slots filled since the table was last emptied */
    uint32_t n_ind_used;                        /* VMJ_IND_USED_MAX + 1: too many to list */
    uint64_t n_translated, n_host_bytes, n_chained, n_flushes;
} vmj_cache;

static inline void vmj_rel32_at(vmj_arena* a, size_t at, size_t target) {
    uint32_t rel = (uint32_t)(target - (at + 4));
    memcpy(a->wbase + at, &rel, 4);
}

/* mov dword [r15 + disp8], imm32 */
static inline void vmj_state_imm(vmj_arena* a, uint8_t disp, uint32_t imm) {
    vmj_b(a, 0x41); vmj_b(a, 0xC7); vmj_b(a, 0x47); vmj_b(a, disp); vmj_u32(a, imm);
}

static inline void vmj_jmp_to(vmj_arena* a, size_t target) {
    vmj_b(a, 0xE9); vmj_u32(a, 0);
    if (!a->overflow)
        vmj_rel32_at(a, a->used - 4, target);
}

/* uint32_t enter(vmj_state* s): the host's callee-saved registers pushed, GS at the window, guest
 * state loaded, then a jump to s->target. */
static void vmj_emit_enter(vmj_arena* a) {
    vmj_emit_enter_host(a);
    vmj_state_access(a, 0x8B, 13, VMJ_OFF_REMAIN, 1);                  /* mov r13, [r15+64] */
    vmj_b(a, 0x41); vmj_b(a, 0xBC); vmj_u32(a, 63);                    /* mov r12d, 63 */
    vmj_emit_load_guest(a);
    vmj_b(a, 0x41); vmj_b(a, 0xFF); vmj_b(a, 0x67); vmj_b(a, VMJ_OFF_TARGET);     /* jmp [r15+80] */
}

/* The way back to C: guest registers, flags and the budget to the state, the host's GS and stack. */
static void vmj_emit_leave(vmj_arena* a, uint32_t exit_code) {
    int g;
    vmj_b(a, 0x9C); vmj_b(a, 0x41); vmj_b(a, 0x5E);                    /* pushfq; pop r14 */
    vmj_b(a, 0xFC);                                                    /* cld (C ABI) */
    vmj_state_access(a, 0x89, 14, VMJ_OFF_EFLAGS, 0);
    for (g = 0; g < 8; g++)
        vmj_state_access(a, 0x89, vmj_host_reg(g), VMJ_OFF_GPR + 4 * g, 0);
    vmj_state_access(a, 0x89, 13, VMJ_OFF_REMAIN, 1);                  /* mov [r15+64], r13 */
    vmj_state_access(a, 0x8B, 14, VMJ_OFF_HOST_GS, 1);
    vmj_b(a, 0xF3); vmj_b(a, 0x49); vmj_b(a, 0x0F); vmj_b(a, 0xAE); vmj_b(a, 0xDE);  /* wrgsbase r14 */
    vmj_state_access(a, 0x8B, 4, VMJ_OFF_HOST_RSP, 1);                 /* mov rsp, [r15+56] */
    vmj_state_imm(a, VMJ_OFF_EXIT, exit_code);
    vmj_b(a, 0xB8); vmj_u32(a, exit_code);                             /* mov eax, imm */
    vmj_b(a, 0x41); vmj_b(a, 0x5F); vmj_b(a, 0x41); vmj_b(a, 0x5E);
    vmj_b(a, 0x41); vmj_b(a, 0x5D); vmj_b(a, 0x41); vmj_b(a, 0x5C);
    vmj_b(a, 0x5D); vmj_b(a, 0x5B); vmj_b(a, 0xC3);
}

/* The indirect-branch lookup (guest target in r14d), without touching the flags (the guest's): the
 * slot of the EIP's low 16 bits is jumped through; the block there compares the whole EIP. */
static void vmj_emit_indirect_lookup(vmj_cache* k) {
    vmj_arena* a = &k->arena;
    k->ind_off = (uint32_t)a->used;
    vmj_b(a, 0x45); vmj_b(a, 0x0F); vmj_b(a, 0xB7); vmj_b(a, 0xE6);         /* movzx r12d, r14w */
    vmj_b(a, 0x43); vmj_b(a, 0xFF); vmj_b(a, 0xA4); vmj_b(a, 0xE7); vmj_u32(a, VMJ_IND_OFF);  /* jmp [r15+r12*8+T] */
    k->ind_miss_off = (uint32_t)a->used;                                    /* a miss */
    vmj_b(a, 0x45); vmj_b(a, 0x89); vmj_b(a, 0x77); vmj_b(a, VMJ_OFF_NEXT);   /* mov [r15+72], r14d */
    vmj_state_imm(a, VMJ_OFF_STUB, VMJ_NO_STUB);
    vmj_jmp_to(a, k->exit_off);
}

/* A block's indirect entry: on to its entry if r14d is its EIP, else the miss exit. The compare is
 * LEA (r12d = r14d - eip) and JECXZ on it, swapped into ECX and back (XCHG): no flags touched. */
static void vmj_emit_indirect_entry(vmj_cache* k, uint32_t eip) {
    vmj_arena* a = &k->arena;
    vmj_b(a, 0x45); vmj_b(a, 0x8D); vmj_b(a, 0xA6); vmj_u32(a, (uint32_t)(-(int32_t)eip));  /* lea r12d, [r14 - eip] */
    vmj_b(a, 0x4C); vmj_b(a, 0x87); vmj_b(a, 0xE1);                         /* xchg rcx, r12 */
    vmj_b(a, 0x67); vmj_b(a, 0xE3); vmj_b(a, 8);                            /* jecxz ok */
    vmj_b(a, 0x4C); vmj_b(a, 0x87); vmj_b(a, 0xE1);                         /* xchg rcx, r12 */
    vmj_jmp_to(a, k->ind_miss_off);
    vmj_b(a, 0x4C); vmj_b(a, 0x87); vmj_b(a, 0xE1);                         /* ok: xchg rcx, r12 */
    vmj_b(a, 0x41); vmj_b(a, 0xBC); vmj_u32(a, 63);                         /* mov r12d, 63 */
}

static void vmj_ind_clear(vmj_cache* k) {
    uint32_t j;
    if (!k->ind)
        return;
    uint64_t miss = (uint64_t)(uintptr_t)(k->arena.base + k->ind_miss_off);
    if (k->n_ind_used <= VMJ_IND_USED_MAX) {
        for (j = 0; j < k->n_ind_used; j++)
            k->ind[k->ind_used[j]] = miss;
    } else {
        for (j = 0; j < VMJ_IND_SIZE; j++)
            k->ind[j] = miss;
    }
    k->n_ind_used = 0;
}

/* After an indirect branch to eip found the translated block at entry_off: the next one goes there
 * without leaving host code. */
static inline void vmj_ind_set(vmj_cache* k, uint32_t eip, uint32_t ind_entry_off) {
    uint32_t slot = eip & (VMJ_IND_SIZE - 1);
    if (k->n_ind_used < VMJ_IND_USED_MAX)
        k->ind_used[k->n_ind_used++] = slot;
    else
        k->n_ind_used = VMJ_IND_USED_MAX + 1;
    k->ind[slot] = (uint64_t)(uintptr_t)(k->arena.base + ind_entry_off);
}

/* Empty the cache: only the trampolines stay. */
static void vmj_cache_reset(vmj_cache* k) {
    vmj_arena* a = &k->arena;
    int sealed = !a->writable;
    if (sealed)
        vmj_arena_unseal(a);
    a->used = 0;
    a->overflow = 0;
    k->enter_off = 0;
    vmj_emit_enter(a);
    k->exit_off = (uint32_t)a->used;
    vmj_emit_leave(a, VMJ_EXIT_STUB);
    k->fault_off = (uint32_t)a->used;
    vmj_emit_leave(a, VMJ_EXIT_FAULT);
    vmj_emit_indirect_lookup(k);
    k->n_side = 0;
    k->n_blocks = 0;
    k->n_patched = 0;
    vmj_arena_seal(a);
    vmj_ind_clear(k);
}

static int vmj_cache_open(vmj_cache* k, size_t arena_size, uint32_t max_blocks, uint32_t max_side,
                          vmj_ind_entry* ind) {
    memset(k, 0, sizeof(*k));
    k->ind = ind;
    k->n_ind_used = VMJ_IND_USED_MAX + 1;         /* the first clear fills every slot */
    if (vmj_arena_open(&k->arena, arena_size) != 0)
        return -1;
    k->side = (vmj_side*)calloc(max_side, sizeof(vmj_side));
    k->blocks = (vmj_jblock*)calloc(max_blocks, sizeof(vmj_jblock));
    k->patched = (uint32_t*)calloc(2 * (size_t)max_blocks, sizeof(uint32_t));
    if (!k->side || !k->blocks || !k->patched) {
        free(k->side); free(k->blocks); free(k->patched); vmj_arena_close(&k->arena);
        return -1;
    }
    k->cap_patched = max_blocks;
    k->cap_side = max_side;
    k->cap_blocks = max_blocks;
    vmj_cache_reset(k);
    return 0;
}

static void vmj_cache_close(vmj_cache* k) {
    free(k->side); free(k->blocks); free(k->patched);
    k->side = NULL; k->blocks = NULL; k->patched = NULL;
    vmj_arena_close(&k->arena);
}

/* An exit stub for a direct branch to guest eip (patchable into jmp rel32, VMJ_STUB_LEN bytes). */
static void vmj_emit_stub(vmj_cache* k, uint32_t eip) {
    vmj_arena* a = &k->arena;
    uint32_t at = (uint32_t)a->used;
    vmj_state_imm(a, VMJ_OFF_NEXT, eip);
    vmj_state_imm(a, VMJ_OFF_STUB, at);
    vmj_jmp_to(a, k->exit_off);
}

/* The exit of an indirect branch: guest target in r14d, through the lookup. */
static void vmj_emit_indirect_exit(vmj_cache* k) {
    vmj_jmp_to(&k->arena, k->ind_off);
}

/* push imm32 on the guest stack: mov dword gs:[r8d - 4], imm32; lea r8d, [r8 - 4] */
static void vmj_emit_push_imm(vmj_arena* a, uint32_t v) {
    vmj_b(a, 0x65); vmj_b(a, 0x67); vmj_b(a, 0x41); vmj_b(a, 0xC7); vmj_b(a, 0x40); vmj_b(a, 0xFC);
    vmj_u32(a, v);
    vmj_emit_esp_add(a, -4);
}

static int vmj_side_add(vmj_cache* k, uint32_t eip, uint32_t index) {
    vmj_side* s;
    if (k->n_side >= k->cap_side)
        return -1;
    s = &k->side[k->n_side++];
    s->host_off = (uint32_t)k->arena.used;
    s->eip = eip;
    s->jblock = k->n_blocks;
    s->index = index;
    return 0;
}

static inline int32_t vmj_rd32(const uint8_t* p) { int32_t v; memcpy(&v, p, 4); return v; }

/* The block's last instruction, if it is a branch this translator handles: emits it and its stubs;
 * 0 (nothing emitted) otherwise. next: the EIP after it. */
/* A direct branch to guest target: to the block's own entry when it loops back to its start (always
 * valid: it is this code; the entry charges the budget again), else to a stub. */
static void vmj_emit_direct(vmj_cache* k, uint32_t target, uint32_t self_eip, size_t self_entry) {
    if (target == self_eip)
        vmj_jmp_to(&k->arena, self_entry);
    else
        vmj_emit_stub(k, target);
}

static int vmj_emit_branch(vmj_cache* k, const uint8_t* g, int len, uint32_t next, uint32_t self_eip,
                           size_t self_entry) {
    vmj_arena* a = &k->arena;
    size_t at, fall;
    uint8_t op = g[0];
    if (op == 0xF3 && len == 2 && g[1] == 0xC3)         /* rep ret: a RET (AMD's branch hint) */
        op = 0xC3, g++, len--;
    if ((op >= 0x70 && op <= 0x7F && len == 2) || (op == 0x0F && len == 6 && g[1] >= 0x80 && g[1] <= 0x8F)) {
        uint32_t target = next + (op == 0x0F ? (uint32_t)vmj_rd32(g + 2) : (uint32_t)(int32_t)(int8_t)g[1]);
        uint8_t cc = op == 0x0F ? g[1] & 15 : op & 15;
        if (target == self_eip) {                       /* a loop on itself: jcc straight to the entry */
            vmj_b(a, 0x0F); vmj_b(a, 0x80 | cc); vmj_u32(a, 0);
            if (!a->overflow)
                vmj_rel32_at(a, a->used - 4, self_entry);
            vmj_emit_stub(k, next);
            return 1;
        }
        vmj_b(a, 0x0F); vmj_b(a, 0x80 | cc); vmj_u32(a, VMJ_STUB_LEN);   /* jcc taken */
        vmj_emit_stub(k, next);
        vmj_emit_stub(k, target);
        return 1;
    }
    if ((op == 0xEB && len == 2) || (op == 0xE9 && len == 5)) {
        vmj_emit_direct(k, next + (op == 0xE9 ? (uint32_t)vmj_rd32(g + 1) : (uint32_t)(int32_t)(int8_t)g[1]),
                        self_eip, self_entry);
        return 1;
    }
    if (op == 0xE8 && len == 5) {
        vmj_emit_push_imm(a, next);
        vmj_emit_stub(k, next + (uint32_t)vmj_rd32(g + 1));
        return 1;
    }
    if ((op == 0xC3 && len == 1) || (op == 0xC2 && len == 3)) {
        uint32_t pop = 4 + (op == 0xC2 ? (uint32_t)(g[1] | (g[2] << 8)) : 0);
        vmj_b(a, 0x65); vmj_b(a, 0x67); vmj_b(a, 0x45); vmj_b(a, 0x8B); vmj_b(a, 0x30);  /* mov r14d, gs:[r8d] */
        vmj_b(a, 0x45); vmj_b(a, 0x8D); vmj_b(a, 0x80); vmj_u32(a, pop);              /* lea r8d, [r8 + pop] */
        vmj_emit_indirect_exit(k);
        return 1;
    }
    if (op >= 0xE0 && op <= 0xE3 && len == 2) {
        /* LOOPNE LOOPE LOOP JECXZ with ECX (67: address size 32 in 64-bit mode); flags untouched */
        uint32_t target = next + (uint32_t)(int32_t)(int8_t)g[1];
        vmj_b(a, 0x67); vmj_b(a, op); vmj_b(a, 2);        /* taken: to the jmp below */
        vmj_b(a, 0xEB); vmj_b(a, 5);                      /* not taken: over it */
        at = a->used;
        vmj_b(a, 0xE9); vmj_u32(a, 0);
        fall = a->used;
        vmj_emit_stub(k, next);
        if (!a->overflow)
            vmj_rel32_at(a, at + 1, a->used);
        vmj_emit_direct(k, target, self_eip, self_entry);
        (void)fall;
        return 1;
    }
    if (op == 0xFF && len >= 2 && (((g[1] >> 3) & 7) == 2 || ((g[1] >> 3) & 7) == 4)) {
        /* CALL / JMP r/m32: the target loads into r14d first, so a fault leaves the guest as it was */
        vmj_ea e;
        int i = 1, call = ((g[1] >> 3) & 7) == 2, j;
        if (!vmj_modrm(g, &i, len, 14, 1, 0, &e) || i != len)
            return 0;
        if (e.is_mem) { vmj_b(a, 0x65); vmj_b(a, 0x67); }
        vmj_b(a, 0x40 | e.rex);
        vmj_b(a, 0x8B);
        for (j = 0; j < e.n; j++) vmj_b(a, e.b[j]);
        if (call)
            vmj_emit_push_imm(a, next);
        vmj_emit_indirect_exit(k);
        return 1;
    }
    return 0;
}

/* r14d = the string step, +size or -size by the guest's DF, without touching the flags (which are
 * the guest's): pushfq/pop reads them, PEXT (BMI2) picks DF, LEA and NOT do the arithmetic. */
static void vmj_emit_string_step(vmj_arena* a, int size) {
    vmj_b(a, 0x9C); vmj_b(a, 0x41); vmj_b(a, 0x5E);                     /* pushfq; pop r14 */
    vmj_b(a, 0x41); vmj_b(a, 0xBC); vmj_u32(a, 0x400);                  /* mov r12d, DF */
    vmj_b(a, 0xC4); vmj_b(a, 0x42); vmj_b(a, 0x0A); vmj_b(a, 0xF5); vmj_b(a, 0xF4);  /* pext r14d, r14d, r12d */
    vmj_b(a, 0x41); vmj_b(a, 0xBC); vmj_u32(a, 63);                     /* mov r12d, 63 */
    vmj_b(a, 0x47); vmj_b(a, 0x8D); vmj_b(a, 0x34); vmj_b(a, 0x36);     /* lea r14d, [r14 + r14] */
    vmj_b(a, 0x41); vmj_b(a, 0xF7); vmj_b(a, 0xD6);                     /* not r14d: -2 DF - 1 */
    vmj_b(a, 0x45); vmj_b(a, 0x8D); vmj_b(a, 0x76); vmj_b(a, 0x02);     /* lea r14d, [r14 + 2]: 1 - 2 DF */
    if (size > 1) {                                                     /* lea r14d, [r14 * size] */
        vmj_b(a, 0x46); vmj_b(a, 0x8D); vmj_b(a, 0x34); vmj_b(a, size == 4 ? 0xB5 : 0x75); vmj_u32(a, 0);
    }
}

/* lea esi/edi/ecx, [r + r14] or [rcx - 1]: the string registers move without touching the flags */
static inline void vmj_emit_string_advance(vmj_arena* a, int reg) {
    vmj_b(a, 0x42); vmj_b(a, 0x8D); vmj_b(a, 0x04 | (reg << 3)); vmj_b(a, 0x30 | reg);   /* lea reg32, [reg + r14] */
}

/* MOVS STOS LODS CMPS SCAS, with REP / REPE / REPNE: emitted as a loop over the window (a host string
 * instruction would write ES:RDI, outside the window). Each element is one load, store or compare
 * followed by the register updates, so a fault leaves the registers of the elements done, as the
 * interpreter's REP leaves them (SDM Vol. 2 REP: restartable). Returns the guest length or 0. */
static int vmj_emit_string(vmj_cache* k, const uint8_t* g, int len) {
    vmj_arena* a = &k->arena;
    int i = 0, rep = 0, o16 = 0, size, kind;
    uint8_t op;
    size_t top = 0, jecxz = 0, exit_jcc = 0;
    for (; i < len; i++) {
        if (g[i] == 0xF3) rep = 3;
        else if (g[i] == 0xF2) rep = 2;
        else if (g[i] == 0x66) o16 = 1;
        else if (g[i] == 0x3E) { }              /* DS: the default (flat) */
        else break;
    }
    if (i != len - 1)
        return 0;
    op = g[i];
    if (op < 0xA4 || op > 0xAF || op == 0xA8 || op == 0xA9)
        return 0;
    size = (op & 1) ? (o16 ? 2 : 4) : 1;
    kind = (op - 0xA4) >> 1;                    /* 0 MOVS 1 CMPS 3 STOS 4 LODS 5 SCAS */
    vmj_emit_string_step(a, size);
    if (rep) {
        top = a->used;
        vmj_b(a, 0x67); vmj_b(a, 0xE3); jecxz = a->used; vmj_b(a, 0);  /* jecxz done */
    }
    /* one element; r12 carries it, and is 63 again after */
    switch (kind) {
    case 0:     /* MOVS: movzx r12d, gs:[esi]; mov gs:[edi], r12 */
    case 1:     /* CMPS: cmp [esi], [edi] */
        if (size == 2) vmj_b(a, 0x66);
        vmj_b(a, 0x65); vmj_b(a, 0x67); vmj_b(a, 0x44);
        if (size == 1) { vmj_b(a, 0x0F); vmj_b(a, 0xB6); } else vmj_b(a, 0x8B);
        vmj_b(a, 0x26);                                                 /* r12, [esi] */
        if (size == 2) vmj_b(a, 0x66);
        vmj_b(a, 0x65); vmj_b(a, 0x67); vmj_b(a, 0x44);
        vmj_b(a, kind == 0 ? (size == 1 ? 0x88 : 0x89) : (size == 1 ? 0x3A : 0x3B));
        vmj_b(a, 0x27);                                                 /* [edi], r12 / cmp r12, [edi] */
        vmj_emit_string_advance(a, 6);
        vmj_emit_string_advance(a, 7);
        break;
    case 3:     /* STOS: mov gs:[edi], al/ax/eax */
        if (size == 2) vmj_b(a, 0x66);
        vmj_b(a, 0x65); vmj_b(a, 0x67); vmj_b(a, size == 1 ? 0x88 : 0x89); vmj_b(a, 0x07);
        vmj_emit_string_advance(a, 7);
        break;
    case 4:     /* LODS: mov al/ax/eax, gs:[esi] */
        if (size == 2) vmj_b(a, 0x66);
        vmj_b(a, 0x65); vmj_b(a, 0x67); vmj_b(a, size == 1 ? 0x8A : 0x8B); vmj_b(a, 0x06);
        vmj_emit_string_advance(a, 6);
        break;
    case 5:     /* SCAS: cmp al/ax/eax, gs:[edi] */
        if (size == 2) vmj_b(a, 0x66);
        vmj_b(a, 0x65); vmj_b(a, 0x67); vmj_b(a, size == 1 ? 0x3A : 0x3B); vmj_b(a, 0x07);
        vmj_emit_string_advance(a, 7);
        break;
    default:
        return 0;
    }
    vmj_b(a, 0x41); vmj_b(a, 0xBC); vmj_u32(a, 63);                     /* mov r12d, 63 */
    if (rep) {
        vmj_b(a, 0x8D); vmj_b(a, 0x49); vmj_b(a, 0xFF);                 /* lea ecx, [rcx - 1] */
        if (kind == 1 || kind == 5) {                                   /* REPE: stop on ZF = 0, REPNE on 1 */
            vmj_b(a, rep == 3 ? 0x75 : 0x74); exit_jcc = a->used; vmj_b(a, 0);
        }
        vmj_b(a, 0xEB); vmj_b(a, (uint8_t)(top - (a->used + 1)));       /* jmp top */
        if (!a->overflow) {
            a->wbase[jecxz] = (uint8_t)(a->used - (jecxz + 1));
            if (exit_jcc)
                a->wbase[exit_jcc] = (uint8_t)(a->used - (exit_jcc + 1));
        }
        if (a->used - top > 120)
            a->overflow = 1;                                            /* rel8 out of reach: not reached */
    }
    return len;
}

/* Translate the guest block at eip whose n instructions have the given lengths and whose bytes are
 * at code (host address of its first byte). Translation stops at the first instruction it cannot
 * emit; that instruction is left to the interpreter (the block ends with a stub to it). last_is_branch:
 * the last instruction may be a branch (the re-encoder refuses every branch, so an ordinary last
 * instruction is re-encoded and followed by a stub to the next EIP).
 * Returns the translated block's index, or -1 (nothing translated). */
static int vmj_translate(vmj_cache* k, uint32_t eip, const uint8_t* code, const uint8_t* lens, uint32_t n,
                         int last_is_branch) {
    vmj_arena* a = &k->arena;
    size_t start = a->used, charge, entry;
    uint32_t done = 0, pos = 0, cur = eip, n_side0 = k->n_side;
    int len;
    vmj_jblock* jb;
    if (k->n_blocks >= k->cap_blocks || a->size - a->used < 4096 || k->cap_side - k->n_side < n + 1)
        return -1;
    if (vmj_arena_unseal(a) != 0)
        return -1;
    vmj_emit_indirect_entry(k, eip);
    entry = a->used;
    vmj_b(a, 0x4D); vmj_b(a, 0x8D); vmj_b(a, 0xAD);                    /* lea r13, [r13 + disp32] */
    charge = a->used;
    vmj_u32(a, 0);
    vmj_b(a, 0xC4); vmj_b(a, 0x42); vmj_b(a, 0x9A); vmj_b(a, 0xF7); vmj_b(a, 0xF5);  /* sarx r14, r13, r12 */
    vmj_b(a, 0x4F); vmj_b(a, 0x8B); vmj_b(a, 0x34); vmj_b(a, 0xF7);    /* mov r14, [r15 + r14*8] */
    for (done = 0; done < n; done++) {
        len = lens[done];
        vmj_side_add(k, cur, done);
        if (done == n - 1 && last_is_branch && vmj_emit_branch(k, code + pos, len, cur + len, eip, entry)) {
            done++;
            goto finished;
        }
        if (vmj_reencode(a, code + pos, len) != len && vmj_emit_string(k, code + pos, len) != len)
            break;
        pos += len;
        cur += len;
    }
    /* stopped before instruction `done` (or ran off the end of a block without a branch) */
    if (done < n)
        k->n_side--;            /* the row of the instruction not translated */
    if (done == 0 || a->overflow) {
        a->used = start;
        a->overflow = 0;
        k->n_side = n_side0;
        vmj_arena_seal(a);
        return -1;
    }
    vmj_emit_stub(k, cur);
finished:
    if (a->overflow) {
        a->used = start;
        a->overflow = 0;
        k->n_side = n_side0;
        vmj_arena_seal(a);
        return -1;
    }
    {
        uint32_t neg = (uint32_t)(-(int32_t)done);
        memcpy(a->wbase + charge, &neg, 4);
    }
    jb = &k->blocks[k->n_blocks];
    jb->eip = eip;
    jb->ninsn = done;
    jb->entry_off = (uint32_t)entry;
    jb->ind_off = (uint32_t)start;
    jb->end_off = (uint32_t)a->used;
    k->n_translated++;
    k->n_host_bytes += a->used - start;
    vmj_arena_seal(a);
    return (int)k->n_blocks++;
}

/* Chain: the stub at stub_off jumps straight to the block entry at entry_off from now on. */
static int vmj_patch_stub(vmj_cache* k, uint32_t stub_off, uint32_t entry_off) {
    vmj_arena* a = &k->arena;
    uint32_t rel = entry_off - (stub_off + 5), target;
    if (stub_off + VMJ_STUB_LEN > a->used || k->n_patched >= k->cap_patched || vmj_arena_unseal(a) != 0)
        return -1;
    memcpy(&target, a->base + stub_off + 4, 4);         /* the stub's mov dword [r15+72], target */
    k->patched[2 * k->n_patched] = stub_off;
    k->patched[2 * k->n_patched + 1] = target;
    k->n_patched++;
    a->wbase[stub_off] = 0xE9;
    memcpy(a->wbase + stub_off + 1, &rel, 4);
    k->n_chained++;
    return vmj_arena_seal(a);
}

/* Every patched stub back to an exit, and the indirect table emptied: the code addresses they
 * resolved may mean other code now (other page tables, another privilege). */
static int vmj_unchain(vmj_cache* k) {
    vmj_arena* a = &k->arena;
    uint32_t j;
    if (k->n_patched) {
        if (vmj_arena_unseal(a) != 0)
            return -1;
        for (j = 0; j < k->n_patched; j++) {
            uint32_t off = k->patched[2 * j], target = k->patched[2 * j + 1];
            a->wbase[off] = 0x41; a->wbase[off + 1] = 0xC7; a->wbase[off + 2] = 0x47;
            a->wbase[off + 3] = VMJ_OFF_NEXT;
            memcpy(a->wbase + off + 4, &target, 4);
        }
        k->n_patched = 0;
        vmj_arena_seal(a);
    }
    vmj_ind_clear(k);
    return 0;
}

/* The side row of the guest instruction whose host code holds arena offset off; NULL outside. */
static const vmj_side* vmj_side_at(const vmj_cache* k, uint32_t off) {
    uint32_t lo = 0, hi = k->n_side;
    const vmj_side* s;
    if (hi == 0 || off < k->side[0].host_off)
        return NULL;
    while (hi - lo > 1) {
        uint32_t mid = (lo + hi) / 2;
        if (k->side[mid].host_off <= off) lo = mid; else hi = mid;
    }
    s = &k->side[lo];
    if (off >= k->blocks[s->jblock].end_off)
        return NULL;
    return s;
}

/* The translated block whose code holds arena offset off; -1 outside every block. */
static int vmj_block_at(const vmj_cache* k, uint32_t off) {
    uint32_t lo = 0, hi = k->n_blocks;
    if (hi == 0 || off < k->blocks[0].entry_off)
        return -1;
    while (hi - lo > 1) {
        uint32_t mid = (lo + hi) / 2;
        if (k->blocks[mid].entry_off <= off) lo = mid; else hi = mid;
    }
    return off < k->blocks[lo].end_off ? (int)lo : -1;
}

#endif
