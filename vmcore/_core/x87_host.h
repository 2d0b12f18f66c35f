/* The guest's x87 instructions run on the host's own x87 (issue 11: "the host's own FPU run
 * with the guest's control word"). The guest's FPU state is kept as an FNSAVE image (the 32-bit
 * protected-mode layout of SDM Vol. 1 Figures 8-9 and 8-11: FCW at 0, FSW at 4, the tag word at
 * 8, ST0-ST7 at 28 + 10 i); one x87 instruction runs as
 *
 *     FNSTCW host -> FRSTOR guest image -> the instruction -> FNSAVE guest image -> FLDCW host
 *
 * so the host FPU is the guest's for exactly one instruction. FRSTOR/FNSAVE move the x87 state
 * only: the host's XMM registers and MXCSR, which the compiled C code around uses, are never
 * touched. FNSAVE leaves the host x87 initialised (empty stack, as the SysV ABI has it between
 * statements of code without long double); the host's control word is put back.
 * (Measured on the development host: the four FXSAVE/FXRSTOR of saving the host state around an
 * FXSAVE-image guest cost 525 ns an instruction, FRSTOR + FNSAVE 187 ns.)
 *
 * The instruction comes from the generated table in x87_ops.h (gen_x87.py), never from guest
 * memory; a memory operand is the 16-byte buffer at RDI, which the engine fills from (and copies
 * back to) guest memory through the MMU. x87 exceptions are delayed to the next waiting
 * instruction, and FNSAVE does not wait, so an unmasked exception the guest's instruction raises
 * never traps on the host: it stays in the guest image's status word (ES) until the engine
 * delivers it as #MF (ops_x87.pxi, which also never runs a waiting instruction while ES is set;
 * FRSTOR, itself waiting, runs while the host FPU is initialised).
 *
 * EFLAGS: the guest's six status flags are loaded into the host's EFLAGS before the instruction
 * (FCMOVcc reads ZF, PF, CF) and read back after it (FCOMI and FUCOMI write ZF, PF, CF and clear
 * OF, SF, AF) with PUSHFQ/POPFQ below the red zone; the host's other flags (DF, TF) are kept.
 */
#ifndef VMCORE_X87_HOST_H
#define VMCORE_X87_HOST_H
#include <stdint.h>

typedef struct {
    uint8_t b[112];         /* the 108-byte FNSAVE image */
} x87_image_t;

typedef void (*x87_host_fn)(x87_image_t *g, uint8_t *m, uint64_t *fl);

#define X87_STATUS_FLAGS 0x8d5ULL   /* OF SF ZF AF PF CF */

#define X87_RUN(BYTES)                                                              \
    do {                                                                            \
        uint16_t host_cw;                                                           \
        uint64_t f = *fl & X87_STATUS_FLAGS;                                        \
        __asm__ volatile("fnstcw %[h]\n\t"                                          \
                         "frstor %[g]\n\t"                                          \
                         "lea -128(%%rsp), %%rsp\n\t"                               \
                         "pushfq\n\t"                                               \
                         "andq $-0x8d6, (%%rsp)\n\t"                                \
                         "orq %[f], (%%rsp)\n\t"                                    \
                         "popfq\n\t"                                                \
                         ".byte " BYTES "\n\t"                                      \
                         "pushfq\n\t"                                               \
                         "popq %[f]\n\t"                                            \
                         "lea 128(%%rsp), %%rsp\n\t"                                \
                         "fnsave %[g]\n\t"                                          \
                         "fldcw %[h]\n\t"                                           \
                         : [f] "+r"(f), [h] "+m"(host_cw), [g] "+m"(*g),            \
                           "+m"(*(uint8_t(*)[16])m)                                 \
                         : "D"(m)                                                   \
                         : "cc", "memory");                                         \
        *fl = f & X87_STATUS_FLAGS;                                                 \
    } while (0)

/* the class bits of x87_class_table (gen_x87.py) */
enum {
    X87_K_UD = 0, X87_K_HOST = 1, X87_K_FNSTSW_AX = 2, X87_K_FLDENV = 3, X87_K_FNSTENV = 4,
    X87_K_FRSTOR = 5, X87_K_FNSAVE = 6,
    X87_WAIT = 0x10, X87_CTL = 0x20, X87_FL_IN = 0x40, X87_FL_OUT = 0x80, X87_INIT = 0x100,
    X87_STORE = 0x200, X87_SIZE_SHIFT = 12,
};

#endif
