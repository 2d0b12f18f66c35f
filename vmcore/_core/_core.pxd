# Engine state shared by every included file of the one extension (_core.pyx).
# Address-space names: gla = guest linear, gpa = guest physical, hva = host virtual.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int8_t, int16_t, int32_t, int64_t, uintptr_t

cdef enum:
    R_EAX = 0
    R_ECX = 1
    R_EDX = 2
    R_EBX = 3
    R_ESP = 4
    R_EBP = 5
    R_ESI = 6
    R_EDI = 7
    R_ZERO = 8          # always 0: absent base/index in an effective address

    S_ES = 0
    S_CS = 1
    S_SS = 2
    S_DS = 3
    S_FS = 4
    S_GS = 5

    TLB_SIZE = 256

cdef struct Seg:
    uint32_t base
    uint32_t limit      # effective limit in bytes (granularity applied)
    uint16_t sel
    uint16_t attr       # descriptor bits 8-15 of dword 1 (type, S, DPL, P) | AVL, D/B, G << 12
    # offset and type check (SDM Vol. 3 §5.3, §5.4), one compare: a read (w = 0) or write
    # (w = 1) of 2**k bytes at offset ea is valid iff (uint64) ea - lo[w][k] <= span[w][k];
    # lo = 2**32 where no access of that kind is allowed (unusable, read-only, execute-only)
    uint64_t lo[2][3]
    uint64_t span[2][3]
    uint32_t flat       # base 0, 4 GiB, readable and writable: part of the decode mode

cdef struct TlbEntry:
    uint32_t tag_r      # gla page base when reads hit, else 1 (never page aligned)
    uint32_t tag_w      # gla page base when writes hit, else 1
    uintptr_t addend    # hva = gla + addend
    uint32_t gpa_page   # gpa >> 12 of the mapped page
    uint32_t is_global  # from a global page (PGE): survives CR3 loads

cdef extern from "x87_host.h" nogil:
    ctypedef struct x87_image_t:    # an FNSAVE image (108 bytes)
        uint8_t b[112]

cdef struct Cpu
cdef struct Insn
ctypedef int (*handler_t)(Cpu* c, Insn* i) noexcept nogil

# One pre-decoded instruction. 32 bytes.
cdef struct Insn:
    handler_t fn
    uint32_t next_eip   # EIP of the following instruction
    uint32_t disp       # displacement; branch target EIP for relative branches
    uint32_t imm        # immediate
    uint16_t imm2       # second immediate (ENTER level, far pointer selector, RET n)
    uint8_t len         # encoded length in bytes
    uint8_t reg         # ModRM.reg or opcode-embedded register
    uint8_t rm          # register operand (mod == 3) or base register of a memory operand
    uint8_t index       # index register (R_ZERO if none)
    uint8_t scale       # index shift 0..3
    uint8_t seg         # segment of the memory operand
    uint8_t flags       # IF_* below
    uint8_t op          # sub-operation or condition code for shared handlers

cdef enum:
    IF_A16 = 1          # 16-bit effective address: wrap to 64 KiB
    IF_O16 = 2          # operand size 16
    IF_REP = 4          # F3 prefix
    IF_REPNE = 8        # F2 prefix
    IF_MEM = 16         # ModRM names memory (mod != 3)
    IF_MODE = 32        # may change the decode mode (segments, CR0, EFLAGS.VM/TF): no chaining after it

cdef struct Block:
    uint32_t eip        # EIP of the first instruction
    uint32_t end_eip    # EIP after the last instruction
    uint32_t cs_base
    uint32_t mode       # decode mode key (CS.D ...)
    uint32_t gpa        # gpa of the first byte
    uint32_t page0      # gpa pages the code bytes lie in (page1 == page0 if one)
    uint32_t page1
    uint32_t ninsn      # guest instructions (excludes the synthetic block end)
    uint32_t valid
    Insn* insns
    Block* hash_next
    Block* succ[2]      # chained successors, checked by eip before use
    uint32_t succ_epoch # cpu.epoch when the successors were linked
    uint32_t mode_change    # ends in an instruction that may change the decode mode
    int32_t jit_block   # its translation (jit_engine.pxi), or -1
    uint32_t jit_heat   # interpreted runs so far, until JIT_HOT

# One shadow page table (shadow.pxi): the composed gla -> gpa translations of one guest
# page directory, filled on hidden faults and kept coherent by tracing guest PT writes.
cdef struct ShadowRoot:
    uint32_t guest_pd_page  # gpa >> 12 of the guest page directory, SHADOW_FREE if unused
    uint32_t stamp          # last use, for replacement
    uint32_t pde_src[1024]  # per 4 MiB: gpa page of the guest page table behind it, or SRC_*
    uint32_t* spt[1024]     # per 4 MiB: 1024 shadow PTEs (gpa frame | SP_* bits), or NULL

cdef struct Cpu:
    uint32_t regs[9]
    uint32_t eip
    uint32_t eflags     # all bits except the six arithmetic ones, which are lazy (cc_*)
    # lazy flags: cc_op names how OSZAPC follow from cc_res/cc_src1/cc_src2/cc_aux
    uint32_t cc_op
    uint32_t cc_res
    uint32_t cc_src1
    uint32_t cc_src2
    uint32_t cc_aux
    Seg seg[6]
    uint32_t cr0
    uint32_t cr2
    uint32_t cr3
    uint32_t cr4
    uint32_t gdtr_base
    uint32_t gdtr_limit
    uint32_t idtr_base
    uint32_t idtr_limit
    Seg ldtr
    Seg tr
    uint32_t dr[8]
    uint32_t msr_sysenter_cs
    uint32_t msr_sysenter_esp
    uint32_t msr_sysenter_eip
    uint64_t msr_apic_base
    uint64_t msr_perf[4]    # P6 PerfCtr0/1 (0xC1, 0xC2) and PerfEvtSel0/1 (0x186, 0x187): stored, not counting
    int tsc_host            # 1: the TSC is the host's CLOCK_MONOTONIC in ns minus tsc_origin_ns (host clock)
    int64_t tsc_origin_ns
    uint64_t tsc_offset     # time stamp counter = icount + tsc_offset (time that passed without instructions)
    uint32_t code32     # CS.D: default operand/address size 32
    uint32_t ss32       # SS.B: 32-bit stack pointer
    uint32_t ss_mask    # 0xFFFFFFFF with ss32, else 0xFFFF
    uint32_t pe         # CR0.PE
    uint32_t cpl
    # CPU model knobs (the 80286 and the 80386+ differ here)
    uint32_t max_insn_len   # longer instructions fault
    int long_insn_vector    # #UD on the 286, #GP on the 386+
    uint32_t rm_flags_zero  # EFLAGS bits a real-mode write cannot set (286: IOPL, NT, bit 15)
    uint32_t lock_ud        # LOCK on a non-lockable instruction is #UD (386+; the 286 ignores it)
    uint32_t last_seg       # S_GS, or S_DS on the 286 (no FS, GS)
    uint32_t rm_ss_fault_gp # real-mode stack-segment overruns raise #GP, not #SS (286)
    # memory
    uint8_t* ram        # hva of gpa 0
    uint32_t ram_size
    uint32_t ram_pages
    uint64_t* code_map  # per gpa page: bit k set when decoded code lies in bytes 64k..64k+63
    TlbEntry* tlb       # the TLB of the current privilege: tlbs[1] at CPL 3, else tlbs[0]
    TlbEntry tlbs[2][256]
    uint32_t sys_access # implicit supervisor access (descriptor tables, TSS) in progress
    uint32_t epoch      # bumped when translations change: chained blocks are rechecked
    # exceptions
    int exc_vector
    int exc_has_err
    uint32_t exc_err
    int exc_soft        # INT n / INT3 / INTO: the pushed EIP is the next instruction's
    uint32_t exc_soft_start # the EIP of that INT, for a fault while delivering it
    int exc_soft_kind   # 0: INT n; 1: INT3 or INTO (not IOPL-sensitive in virtual-8086 mode);
                        # 2: INT1/ICEBP (no gate DPL check either)
    int first_exc_vector
    int first_exc_has_err
    uint32_t first_exc_err
    uint32_t first_exc_eip
    # exits
    int exit_reason
    uint32_t io_port
    uint32_t io_size
    uint32_t io_value
    uint32_t io_is_in
    uint32_t io_string   # INS pending: the value read goes to ES:(E)DI
    uint32_t io_a16
    uint32_t io_rep
    uint32_t io_next_eip
    uint32_t io_more     # the INS element just stored left more of a REP INS (ins_complete)
    uint32_t io_outs_more  # the OUTS element just sent leaves more of a REP OUTS (h_OUTS)
    uint32_t io_seg      # its source segment
    uint32_t until_eip
    int until_active
    # external interrupts (SDM Vol. 3 §6.8): a vector waiting for IF = 1 at an instruction boundary
    int irq_pending
    int irq_vector
    int int_shadow      # STI / MOV SS / POP SS: no interrupt before the next instruction
    int intr_line       # the interrupt controller's INTR output (level)
    int attention       # until_active | intr_line | irq_pending | int_shadow | db_pending | yield_now
    uint32_t a20_mask   # 0xFFEFFFFF while the A20 gate is closed
    # ROM: mapped at the top of the 4 GiB space, and (read-only) below 1 MiB where PAM lets it
    uint8_t* rom
    uint32_t rom_size
    uint32_t rom_low_gpa
    # i440FX PAM (memory.pxi pam_access): per 4 KiB page of gpa 0xC0000-0xFFFFF, PAM_READ_RAM |
    # PAM_WRITE_RAM; a clear bit sends that access to the ROM's low window (or open bus)
    uint8_t pam[64]
    # counters
    uint64_t icount
    uint64_t n_irqs
    uint64_t n_rom_writes
    uint64_t n_msr_unknown  # RDMSR/WRMSR of an MSR this CPU model lacks (#GP(0), as on the model)
    uint64_t n_blocks_decoded
    uint64_t n_block_lookups
    uint64_t n_chain_hits
    uint64_t n_tlb_hits
    uint64_t n_tlb_misses
    uint64_t n_tlb_flushes
    uint64_t n_page_walks
    uint64_t n_page_faults
    uint64_t n_unmapped_reads
    uint64_t n_unmapped_writes
    uint64_t n_smc_invalidations
    uint64_t n_cache_flushes
    uint64_t n_chain_evictions   # blocks dropped from a full hash bucket
    uint64_t n_exceptions
    uint64_t n_exits[16]
    # the block cache: arenas of blocks and records, and a hash by EIP
    Block* cur_block    # the block being executed
    Block* blocks
    uint32_t nblocks
    Insn* insn_pool
    uint32_t ninsns
    Block** htab
    # the monitor (monitor.pxi, shadow.pxi); all zero in the bare mode
    uint32_t mon            # MON_BARE, MON_BT or MON_TRAP
    uint32_t vctx           # the state is the virtual CPU's (an emulation or a reflection runs)
    uint32_t vring0         # real CPL 1 holds the guest's (virtual) CPL 0
    uint32_t flags_split    # protected mode: the virtual EFLAGS.IF and IOPL are in vflags
    uint32_t vflags
    uint32_t desc_adj       # DPL bits read_descriptor added when compressing a descriptor
    uint8_t** xlat          # bt, per gpa page: a scanner action per code byte (ACT_*), or NULL
    handler_t* callout_fn   # per insn_pool slot: the handler a callout runs in the virtual context
    uint8_t* callout_kind
    uint32_t xlat_miss_gla
    uint32_t xlat_miss_gpa
    uint32_t xlat_source    # XS_ENGINE: decode-time classification; XS_SCANNER: the Python scanner
    uint64_t n_xlat_classified  # guest-kernel instructions the engine classified at decode time
    uint8_t* traced         # per gpa page: a guest page-table page, written only through mem_slow
    uint16_t* pt_users      # per gpa page: shadow PDEs built from it (as a page table)
    uint32_t* pt_rmap       # per gpa page: (root index << 10 | PDE index) + 1 of its first user
    ShadowRoot* roots       # NROOTS of them
    ShadowRoot* shadow_cur  # the shadow of the current guest CR3 (NULL: look it up)
    uint32_t shadow_clock
    uint64_t n_translations
    uint64_t n_xlat_invalidated
    uint64_t n_callouts[32]
    uint64_t n_traps[32]
    # adaptive translation (monitor.pxi): guest-kernel instructions that keep trapping
    uint32_t adapt_gla[1024]    # ADAPT_SLOTS, hashed by linear address
    uint16_t adapt_traps[1024]  # traps counted there; ADAPT_HOT: retranslated as a callout
    uint64_t n_adaptive_retranslations
    uint64_t n_adaptive_calls
    uint64_t n_reflections
    uint64_t n_hidden_faults
    uint64_t n_true_faults
    uint64_t n_traced_writes
    uint64_t n_shadow_fills
    uint64_t n_shadows_created
    uint64_t n_shadows_reused
    uint64_t n_shadows_dropped
    # rare run-loop conditions (engine.pxi attend), kept after the hot fields
    int db_pending      # a single-step #DB owed to an instruction that ended in an exit
    int yield_now       # slow work (block invalidation, deliveries) used up the slice: return to the caller
    uint64_t slow_work
    uint64_t n_rep_chunks   # REP string instructions suspended after REP_CHUNK elements
    void* jit               # JitState (jit_engine.pxi) with engine="jit", else NULL
    # the x87 FPU (ops_x87.pxi): FCW, FSW, FTW and ST0-ST7 in an FNSAVE image run on the host
    # x87; the guest's last instruction and operand pointers beside it
    x87_image_t fpu
    uint32_t fpu_fip
    uint32_t fpu_fdp
    uint16_t fpu_fcs
    uint16_t fpu_fds
    uint16_t fpu_fop
    uint32_t ferr           # FERR#: an unmasked exception was reported with CR0.NE = 0
    # memory-mapped I/O (memory.pxi, "MMIO"): gpa pages outside RAM whose accesses are exits. A
    # guest access there stops its instruction before it retires (EXIT_MMIO); run() re-executes it
    # with the answers logged so far, in order, until every access it makes has one.
    uint32_t mmio_n             # regions in use (MMIO_REGIONS at most)
    uint32_t mmio_first[8]      # gpa of a region's first byte (page aligned)
    uint32_t mmio_last[8]       # gpa of its last byte
    uint32_t mmio_log_n         # accesses of the stopped instruction logged (MMIO_LOG at most)
    uint32_t mmio_log_pos       # accesses the re-executed instruction has made so far
    uint32_t mmio_log_ready     # the last logged access has been serviced (mmio_complete)
    uint32_t mmio_log_gpa[4]
    uint32_t mmio_log_size[4]
    uint32_t mmio_log_value[4]  # the value written, or (once serviced) the value read
    uint32_t mmio_log_write[4]
    uint32_t mmio_exit          # the access just logged needs the device: leave run() before the instruction
    uint32_t mmio_blocked       # an exception delivery runs: MMIO reads as open bus there
    uint64_t n_mmio_reads
    uint64_t n_mmio_writes
    uint64_t n_mmio_open_bus    # MMIO accesses that could not be exits (implicit, in a delivery, from the host)
    uint32_t mmio_const_n       # registers whose reads the engine answers (MMIO_CONSTS at most)
    uint32_t mmio_const_gpa[8]  # gpa of the aligned dword
    uint32_t mmio_const_value[8]
    uint64_t n_mmio_const_reads
    uint32_t apic_present       # a local APIC (Machine(apic=True)): CPUID.1:EDX.APIC follows IA32_APIC_BASE.EN
