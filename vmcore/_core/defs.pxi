# Constants shared by the engine's included files.

# Handler return codes (what the dispatch loop does next).
cdef enum:
    RC_NEXT = 0         # continue with the next record of the block
    RC_BRANCH = 1       # instruction done, cpu.eip set: the block is finished
    RC_FAULT = 2        # instruction not done: deliver cpu.exc_vector at its EIP
    RC_EXIT = 3         # instruction done, leave run() with cpu.exit_reason (eip = next)
    RC_RESTART = 4      # instruction not done (stale code): look the block up again at its EIP
    RC_EXIT_BEFORE = 5  # instruction not done, leave run() with cpu.exit_reason (eip = this one)

# Exit reasons: a closed set, mirrored by vmcore.Exit.
cdef enum:
    EXIT_NONE = 0
    EXIT_HLT = 1
    EXIT_IO = 2
    EXIT_BUDGET = 3
    EXIT_SHUTDOWN = 4
    EXIT_UNTIL = 5
    EXIT_INTERNAL = 6   # engine resource problem (reported, never silently ignored)
    EXIT_UNIMPLEMENTED = 7  # a valid instruction this engine does not implement yet
    EXIT_INTR = 8       # the interrupt controller's INTR line is up and the CPU can take it
    EXIT_TRANSLATE = 9  # bt: guest-kernel code at xlat_miss_gla is not scanned yet
    EXIT_FERR = 10      # x87 FERR# asserted with CR0.NE = 0: raise IRQ 13 (eip = the waiting instruction)
    EXIT_MMIO = 11      # a guest access to an MMIO region (mmio_request): eip = the instruction, not retired yet

# EFLAGS bits (SDM Vol. 1 §3.4.3).
cdef enum:
    FL_CF = 0x0001
    FL_PF = 0x0004
    FL_AF = 0x0010
    FL_ZF = 0x0040
    FL_SF = 0x0080
    FL_TF = 0x0100
    FL_IF = 0x0200
    FL_DF = 0x0400
    FL_OF = 0x0800
    FL_IOPL = 0x3000
    FL_NT = 0x4000
    FL_RF = 0x10000
    FL_VM = 0x20000
    FL_AC = 0x40000
    FL_ID = 0x200000
    FL_ARITH = 0x08D5   # OF SF ZF AF PF CF: kept lazily
    FL_FIXED1 = 0x0002  # reserved bit 1 reads as 1

# Exception vectors (SDM Vol. 3 §6.3.1).
cdef enum:
    EXC_DE = 0
    EXC_DB = 1
    EXC_BP = 3
    EXC_OF = 4
    EXC_BR = 5
    EXC_UD = 6
    EXC_NM = 7
    EXC_DF = 8
    EXC_TS = 10
    EXC_NP = 11
    EXC_SS = 12
    EXC_GP = 13
    EXC_PF = 14
    EXC_MF = 16         # x87 FPU floating-point error

# Lazy flag kinds; cc_op = kind * 4 + size index (0: 8-bit, 1: 16-bit, 2: 32-bit).
cdef enum:
    CC_EFLAGS = 0       # flags are in cc_src1 as EFLAGS bits
    CC_ADD = 1
    CC_ADC = 2          # carry-in in cc_aux
    CC_SUB = 3
    CC_SBB = 4          # borrow-in in cc_aux
    CC_LOGIC = 5
    CC_INC = 6          # CF preserved in cc_aux
    CC_DEC = 7          # CF preserved in cc_aux
    CC_RES = 8          # SF ZF PF from cc_res; CF OF AF as EFLAGS bits in cc_aux

# Block cache sizing.
cdef enum:
    MAX_BLOCK_INSNS = 64
    REP_CHUNK = 65536       # elements of a REP string instruction per dispatch
    SLOW_WORK_SLICE = 1 << 24   # block-cache entries scanned (and deliveries x 256) per run() slice
    HASH_BITS = 15
    MAX_CHAIN = 16            # blocks per hash bucket (a guest can make many at one EIP)
    HASH_SIZE = 32768
    BLOCK_ARENA = 65536
    INSN_ARENA = 1048576
