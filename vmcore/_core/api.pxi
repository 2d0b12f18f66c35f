# The Python face of the engine. This is the one place where C state becomes
# Python objects; the run loop itself never touches Python.

from libc.stdlib cimport calloc, free

EXIT_NAMES = {
    EXIT_NONE: "none", EXIT_HLT: "hlt", EXIT_IO: "io", EXIT_BUDGET: "budget",
    EXIT_SHUTDOWN: "shutdown", EXIT_UNTIL: "until", EXIT_INTERNAL: "internal",
    EXIT_UNIMPLEMENTED: "unimplemented", EXIT_INTR: "intr", EXIT_TRANSLATE: "translate", EXIT_FERR: "ferr",
    EXIT_MMIO: "mmio",
}
MODE_NUMBERS = {"bare": MON_BARE, "bt": MON_BT, "trap": MON_TRAP}

REG_NAMES = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
SEG_NAMES = ("es", "cs", "ss", "ds", "fs", "gs")

cdef bint _tables_ready = False

cdef class Engine:
    """One virtual CPU with its memory and block cache.

    ``ram`` is a C-contiguous numpy uint8 array: guest physical memory, index = gpa.
    The engine keeps a reference to it; Python sees guest memory without a copy.
    """
    cdef Cpu* c
    cdef object ram
    cdef object rom_ref
    cdef uint8_t[::1] ram_view

    def __cinit__(self, ram):
        global _tables_ready
        if not _tables_ready:
            init_parity()
            init_decode_tables()
            init_generated_tables()
            _tables_ready = True
        self.c = <Cpu*>calloc(1, sizeof(Cpu))
        if self.c == NULL:
            raise MemoryError("engine state")
        self.ram = ram
        self.ram_view = ram
        if self.ram_view.shape[0] < 4096 or self.ram_view.shape[0] > 0xC0000000U:
            raise ValueError("guest RAM must be 4 KiB .. 3 GiB")
        if self.ram_view.shape[0] & 0xFFF:
            # the TLB maps whole pages: a partial last page would expose host memory past the array
            raise ValueError(f"guest RAM must be a whole number of 4 KiB pages, not {self.ram_view.shape[0]} bytes")
        self.c.ram = &self.ram_view[0]
        self.c.ram_size = <uint32_t>self.ram_view.shape[0]
        self.c.ram_pages = (self.c.ram_size + 0xFFF) >> 12
        self.c.code_map = <uint64_t*>calloc(self.c.ram_pages, sizeof(uint64_t))
        self.c.tlb = &self.c.tlbs[0][0]
        self.c.blocks = <Block*>calloc(BLOCK_ARENA, sizeof(Block))
        self.c.insn_pool = <Insn*>calloc(INSN_ARENA, sizeof(Insn))
        self.c.htab = <Block**>calloc(HASH_SIZE, sizeof(Block*))
        self.c.traced = <uint8_t*>calloc(self.c.ram_pages, 1)
        self.c.pt_users = <uint16_t*>calloc(self.c.ram_pages, sizeof(uint16_t))
        self.c.pt_rmap = <uint32_t*>calloc(self.c.ram_pages, sizeof(uint32_t))
        if not (self.c.code_map and self.c.blocks and self.c.insn_pool and self.c.htab and self.c.traced
                and self.c.pt_users and self.c.pt_rmap):
            raise MemoryError("block cache")
        self.c.a20_mask = 0xFFFFFFFFU       # A20 open, as QEMU's PC starts
        memset(self.c.pam, PAM_RAM, PAM_PAGES)  # no chipset, no ROM: 0xC0000-0xFFFFF is RAM
        tlb_flush_all(self.c)
        self.c.n_tlb_flushes = 0
        self.set_cpu_model("i686")
        self.reset_flat32()

    def set_cpu_model(self, str model):
        """i686 (default), 80386 or 80286: the few behaviours in which they differ."""
        if model == "80286":
            self.c.max_insn_len = 10
            self.c.long_insn_vector = EXC_GP
            self.c.rm_flags_zero = 0xF000
            self.c.lock_ud = 0
            self.c.last_seg = S_DS
            self.c.rm_ss_fault_gp = 1
        elif model in ("80386", "i686"):
            self.c.max_insn_len = 15
            self.c.long_insn_vector = EXC_GP
            self.c.rm_flags_zero = 0
            self.c.lock_ud = 1
            self.c.last_seg = S_GS
            self.c.rm_ss_fault_gp = 0
        else:
            raise ValueError(f"unknown CPU model {model!r}")
        cache_flush(self.c)

    def _reset_common(self):
        cdef int k
        for k in range(9):
            self.c.regs[k] = 0
        self.c.eflags = FL_FIXED1
        set_arith_flags(self.c, 0)
        self.c.cpl = 0
        self.c.gdtr_base = 0
        self.c.ldtr.sel = 0
        self.c.ldtr.base = 0
        self.c.ldtr.limit = 0xFFFF
        self.c.ldtr.attr = 0x0082
        self.c.tr.sel = 0
        self.c.tr.base = 0
        self.c.tr.limit = 0xFFFF
        self.c.tr.attr = 0x008B
        self.c.cr2 = 0
        load_cr3(self.c, 0)
        self.c.cr4 = 0
        self.c.tlb = &self.c.tlbs[0][0]
        self.c.msr_sysenter_cs = 0
        self.c.msr_sysenter_esp = 0
        self.c.msr_sysenter_eip = 0
        self.c.msr_perf[0] = self.c.msr_perf[1] = self.c.msr_perf[2] = self.c.msr_perf[3] = 0
        # the BSP's local APIC at its default base, enabled (SDM Vol. 3 §10.4.4); disabled without one
        self.c.msr_apic_base = 0xFEE00000ULL | APIC_BASE_BSP | (APIC_BASE_EN if self.c.apic_present else 0)
        self.c.exc_soft = 0
        self.c.io_string = 0
        self.c.io_more = 0
        self.c.io_outs_more = 0
        mmio_retire(self.c)
        self.c.irq_pending = 0
        self.c.int_shadow = 0
        self.c.db_pending = 0
        update_attention(self.c)

    def reset_real(self):
        """The processor's state after RESET (SDM Vol. 3 §9.1.1, Table 9-1): real mode,
        CS:IP = F000:FFF0 with CS base FFFF0000h, every limit FFFFh."""
        cdef int k
        self._reset_common()
        self.c.regs[R_EDX] = 0x00000619     # the CPUID leaf 1 signature
        self.c.eip = 0xFFF0
        for k in range(6):
            self.c.seg[k].sel = 0
            self.c.seg[k].base = 0
            self.c.seg[k].limit = 0xFFFF
            self.c.seg[k].attr = 0x0093
            seg_set_limits(&self.c.seg[k], True)
        self.c.seg[S_CS].sel = 0xF000
        self.c.seg[S_CS].base = 0xFFFF0000U
        self.c.seg[S_CS].attr = 0x009B
        self.c.code32 = 0
        self.c.ss32 = 0
        self.c.ss_mask = 0xFFFF
        self.c.pe = 0
        self.c.cr0 = 0x60000010
        self.c.idtr_base = 0
        self.c.idtr_limit = 0xFFFF
        self.c.gdtr_limit = 0xFFFF
        fpu_reset(self.c, True)
        cache_flush(self.c)
        tlb_flush_all(self.c)
        if self.c.roots != NULL:
            shadow_flush_all(self.c)

    def __dealloc__(self):
        if self.c != NULL:
            jit_detach(self.c)
            if self.c.roots != NULL:
                shadow_flush_all(self.c)
                free(self.c.roots)
            xlat_drop_all(self.c)
            free(self.c.xlat)
            free(self.c.callout_fn)
            free(self.c.callout_kind)
            free(self.c.traced)
            free(self.c.pt_users)
            free(self.c.pt_rmap)
            free(self.c.code_map)
            free(self.c.blocks)
            free(self.c.insn_pool)
            free(self.c.htab)
            free(self.c)
            self.c = NULL

    def reset_flat32(self):
        """Flat 32-bit protected mode, as a multiboot loader leaves the CPU:
        every segment base 0, limit 4 GiB; paging off; EFLAGS = 2; IDTR limit 0."""
        cdef int k
        self._reset_common()
        self.c.eip = 0
        for k in range(6):
            self.c.seg[k].base = 0
            self.c.seg[k].limit = 0xFFFFFFFFU
            self.c.seg[k].sel = 0x10 if k != S_CS else 0x08
            self.c.seg[k].attr = 0xC093 if k != S_CS else 0xC09B
            seg_set_limits(&self.c.seg[k], False)
        self.c.code32 = 1
        self.c.ss32 = 1
        self.c.ss_mask = 0xFFFFFFFFU
        self.c.pe = 1
        self.c.cr0 = 0x00000011     # PE, ET
        self.c.idtr_base = 0
        self.c.idtr_limit = 0
        self.c.gdtr_limit = 0
        fpu_reset(self.c, False)
        cache_flush(self.c)
        tlb_flush_all(self.c)
        if self.c.roots != NULL:
            shadow_flush_all(self.c)

    def fpu_fxsave(self):
        """The x87 state as FXSAVE stores it (bytes 0-159 of the image; ops_x87.pxi)."""
        cdef uint8_t buf[160]
        fpu_fx_store(self.c, buf)
        return bytes(buf[:160])

    def fpu_fnsave(self, bint o16=False, bint real=False):
        """The x87 state as FNSAVE would store it (108 bytes, or 94 with o16), without the FNINIT."""
        cdef uint8_t buf[108]
        cdef uint32_t k, env = fpu_env_store(self.c, buf, o16, real)
        for k in range(8):
            memcpy(&buf[env + 10 * k], fpu_st(self.c, k), 10)
        return bytes(buf[:env + 80])

    def fpu_fxrstor(self, image):
        """Load the x87 state from an FXSAVE image (at least its first 160 bytes), as FXRSTOR does."""
        cdef const uint8_t[::1] v = bytes(image)
        cdef uint8_t buf[160]
        if v.shape[0] < 160:
            raise ValueError("an FXSAVE image holds at least 160 bytes")
        memcpy(buf, &v[0], 160)
        fpu_fx_load(self.c, buf)

    property fpu_ferr:
        """The PC's FERR# latch (ops_x87.pxi fpu_pending): 0 idle, 1 latched (IRQ 13 raised),
        2 IGNNE# asserted after a write to port F0h."""
        def __get__(self):
            return self.c.ferr

    def fpu_ignne(self):
        """A write to port F0h: the FERR# latch clears and IGNNE# is asserted until FERR# drops."""
        if self.c.ferr == 1:
            self.c.ferr = 2

    def run(self, uint64_t budget):
        """Run at most ``budget`` instructions; returns the exit reason (int)."""
        cdef int reason
        cdef JitState* J = <JitState*>self.c.jit
        with nogil:
            if J != NULL:
                # translated code runs only while its fault handler is installed (nested or
                # concurrent runs on another engine get the interpreter)
                J.handler_on = vmw_install() == 0
            if self.c.mon:
                to_real(self.c)         # outside run() the state is the virtual CPU's
            reason = run_loop(self.c, budget)
            if self.c.mon:
                to_virtual(self.c)
            if J != NULL and J.handler_on:
                vmw_uninstall()
                J.handler_on = 0
        return reason

    def jit_attach(self, int ram_fd):
        """engine="jit": translate hot flat 32-bit code to host code that reaches guest RAM through
        a window over ``ram_fd``, the memfd whose pages the RAM array maps (jit_engine.pxi)."""
        cdef int rc
        if self.c.jit != NULL:
            raise ValueError("the JIT is already attached")
        rc = jit_attach(self.c, ram_fd)
        if rc != 0:
            raise OSError(-rc, "setting up the JIT's guest window and code cache")

    @property
    def jit_enabled(self):
        return self.c.jit != NULL

    @property
    def jit_threshold(self):
        """Interpreted runs of a block before the JIT translates it (1: at once, as the
        differential tests use it)."""
        return (<JitState*>self.c.jit).hot if self.c.jit != NULL else 0

    @property
    def jit_paged_min_interval(self):
        """Paged code runs translated only while the guest goes this many instructions between TLB
        flushes (jit_engine.pxi PAGED_MIN_INTERVAL). 0: always, and no pause for guests that fault
        often either (PENALTY_MAX), as the tests of the paged views use it."""
        return (<JitState*>self.c.jit).paged_min_interval if self.c.jit != NULL else 0

    @jit_paged_min_interval.setter
    def jit_paged_min_interval(self, uint64_t instructions):
        if self.c.jit == NULL:
            raise ValueError("the JIT is not attached (engine=\"interp\")")
        (<JitState*>self.c.jit).paged_min_interval = instructions

    @jit_threshold.setter
    def jit_threshold(self, uint32_t runs):
        if self.c.jit == NULL:
            raise ValueError("the JIT is not attached (engine=\"interp\")")
        if not 1 <= runs <= 1000000:
            raise ValueError(f"jit_threshold must be 1..1000000, not {runs}")
        (<JitState*>self.c.jit).hot = runs

    def jit_windows(self):
        """(host address, bytes reserved) of each guest window: the identity view, then the paged
        supervisor and user views; [] with the interpreter alone."""
        cdef JitState* J = <JitState*>self.c.jit
        if J == NULL:
            return []
        return [(<uintptr_t>J.win.base, J.win.reserved), (<uintptr_t>J.pv[0].w.base, J.pv[0].w.reserved),
                (<uintptr_t>J.pv[1].w.base, J.pv[1].w.reserved)]

    def jit_stats(self):
        """The JIT's counters; {} with the interpreter alone."""
        cdef JitState* J = <JitState*>self.c.jit
        if J == NULL:
            return {}
        return {
            "jit_blocks_translated": J.cache.n_translated,
            "jit_host_code_bytes": J.cache.n_host_bytes,
            "jit_translate_us": J.translate_ns // 1000,
            "jit_translate_fails": J.n_translate_fails,
            "jit_chained": J.cache.n_chained,
            "jit_flushes": J.n_flushes,
            "jit_entries": J.n_entries,
            "jit_instructions": J.n_jit_insns,
            "jit_exits_stub": J.n_stub_exits,
            "jit_exits_indirect": J.n_indirect_exits,
            "jit_exits_budget": J.n_budget_exits,
            "jit_faults_hidden": J.n_hidden_fills,
            "jit_view_flushes": J.n_view_flushes,
            "jit_unchains": J.n_unchains,
            "jit_paged_declined": J.n_paged_declined,
            "jit_pauses": J.n_pauses,
            "jit_faults_traced": J.n_faults_traced,
            "jit_faults_unmapped": J.n_faults_unmapped,
            "jit_faults_divide": J.n_faults_divide,
            "jit_faults_true": J.n_faults_true,
            "jit_interp_handoffs": J.n_interp_handoffs,
            "jit_window_maps": J.win.n_maps,
            "jit_window_protects": J.win.n_protects,
        }

    # the monitor
    def set_mode(self, str mode):
        """bare, bt or trap (ARCHITECTURE.md "Modes"); decoded code and translations are dropped."""
        cdef Cpu* c = self.c
        cdef int k
        if mode not in MODE_NUMBERS:
            raise ValueError(f"unknown mode {mode!r}")
        if MODE_NUMBERS[mode] != MON_BARE and c.roots == NULL:
            c.roots = <ShadowRoot*>calloc(NROOTS, sizeof(ShadowRoot))
            c.xlat = <uint8_t**>calloc(c.ram_pages, sizeof(uint8_t*))
            c.callout_fn = <handler_t*>calloc(INSN_ARENA, sizeof(handler_t))
            c.callout_kind = <uint8_t*>calloc(INSN_ARENA, 1)
            if not (c.roots and c.xlat and c.callout_fn and c.callout_kind):
                raise MemoryError("monitor state")
            for k in range(NROOTS):
                shadow_init_root(&c.roots[k])
        if c.roots != NULL:
            shadow_flush_all(c)
        c.mon = MODE_NUMBERS[mode]
        c.vctx = 1 if c.mon else 0
        cache_flush(c)
        tlb_flush_all(c)

    property mode:
        def __get__(self):
            return {v: k for k, v in MODE_NUMBERS.items()}[self.c.mon]

    property xlat_invalidations:
        """Pages whose translations a write dropped, so far."""
        def __get__(self):
            return self.c.n_xlat_invalidated

    property xlat_miss:
        """(gla, gpa) of the guest-kernel instruction an EXIT_TRANSLATE asks the scanner for."""
        def __get__(self):
            return self.c.xlat_miss_gla, self.c.xlat_miss_gpa

    def xlat_install(self, uint32_t gpa, int action, uint32_t length):
        """The scanner's action (ACT_* code) for the instruction at gpa."""
        if self.c.xlat == NULL:
            raise ValueError("translations exist only in the bt mode")
        if not ACT_IDENT <= action < ACT_CALLOUT + N_CALLOUT_KINDS:
            raise ValueError(f"action {action} is not an ACT_* code (1 .. {ACT_CALLOUT + N_CALLOUT_KINDS - 1})")
        return xlat_set(self.c, gpa, action, length) == 0

    property xlat_source:
        """Who classifies guest-kernel instructions under bt: "engine" (at decode time, from the
        generated table) or "scanner" (an EXIT_TRANSLATE to the Python scanner per block)."""
        def __get__(self):
            return "scanner" if self.c.xlat_source == XS_SCANNER else "engine"

        def __set__(self, str source):
            if source not in ("engine", "scanner"):
                raise ValueError(f"xlat_source is 'engine' or 'scanner', not {source!r}")
            self.c.xlat_source = XS_SCANNER if source == "scanner" else XS_ENGINE
            cache_flush(self.c)             # blocks decoded under the other source go

    def classify(self, const unsigned char[:] code, bint code32=True):
        """The engine's decode-time action (ACT_* code) for the instruction at the start of code."""
        cdef int n = <int>min(code.shape[0], 15)
        cdef uint8_t buf[16]
        cdef int k
        for k in range(n):
            buf[k] = code[k]
        return classify_buffer(buf, n, code32)

    def classify_at(self, const unsigned char[:] code, offsets, bint code32=True):
        """classify() at each offset into code (a corpus): a list of ACT_* codes."""
        cdef Py_ssize_t size = code.shape[0], off
        cdef int n
        out = []
        for off in offsets:
            if not 0 <= off < size:
                raise IndexError(f"offset {off} outside the {size} bytes given")
            n = <int>min(size - off, 15)
            out.append(classify_buffer(&code[off], n, code32))
        return out

    def xlat_page_present(self, uint32_t gpa_page):
        """Whether the engine holds translations for gpa_page (none since its last write)."""
        return self.c.xlat != NULL and gpa_page < self.c.ram_pages and self.c.xlat[gpa_page] != NULL

    def code_bytes(self, uint32_t gpa, uint32_t size):
        """``size`` bytes from gpa as instruction fetches read them (ROM windows, open bus), not
        as RAM holds them: what the scanner must classify."""
        cdef bytearray out = bytearray(size)
        cdef uint32_t k
        for k in range(size):
            out[k] = phys_code_byte(self.c, <uint32_t>(gpa + k))
        return bytes(out)

    def phys_read(self, uint32_t gpa, uint32_t size):
        """``size`` bytes from gpa as the processor's reads see them (PAM, the ROM windows, open
        bus), without touching the TLB or the counters."""
        cdef bytearray out = bytearray(size)
        cdef uint32_t k
        cdef uint8_t* hva
        for k in range(size):
            hva = phys_target(self.c, <uint32_t>(gpa + k), False)
            out[k] = hva[0] if hva != NULL else 0xFF
        return bytes(out)

    def phys_write(self, uint32_t gpa, const unsigned char[:] data):
        """Write data at gpa as the processor's writes land (PAM: RAM or nowhere; the ROM and open
        bus ignore them); decoded code and traced page tables on the pages follow, as for a
        guest write."""
        cdef uint32_t k, n = data.shape[0]
        cdef uint8_t* hva
        for k in range(n):
            hva = phys_target(self.c, <uint32_t>(gpa + k), True)
            if hva != NULL:
                hva[0] = data[k]
        invalidate_gpa_range(self.c, gpa, n)

    def code_gpa_of(self, uint32_t gla):
        """gla -> gpa through the guest's page tables, as a supervisor read, without touching
        anything (no accessed bits, no TLB or shadow fill, no fault); None if not present."""
        cdef Cpu* c = self.c
        cdef uint32_t pde_gpa, pde, pte_gpa, pte
        cdef bint big
        if not (c.cr0 & CR0_PG):
            return gla & c.a20_mask
        big = guest_entries(c, gla, &pde_gpa, &pde, &pte_gpa, &pte)
        if not (pde & PTE_P) or not (pte & PTE_P):
            return None
        return guest_frame_gpa(gla, pte, big) & c.a20_mask

    property code32:
        def __get__(self):
            return self.c.code32

    def monitor_stats(self):
        """The monitor's counters; callouts and traps by kind number."""
        cdef Cpu* c = self.c
        return {
            "translations_invalidated": c.n_xlat_invalidated,
            "classified": c.n_xlat_classified,
            "callouts_by_kind": [c.n_callouts[k] for k in range(N_CALLOUT_KINDS)],
            "traps_by_kind": [c.n_traps[k] for k in range(32)],
            "adaptive_retranslations": c.n_adaptive_retranslations,
            "adaptive_calls": c.n_adaptive_calls,
            "reflections": c.n_reflections,
            "hidden_faults": c.n_hidden_faults,
            "true_faults": c.n_true_faults,
            "traced_writes": c.n_traced_writes,
            "shadow_fills": c.n_shadow_fills,
            "shadows_created": c.n_shadows_created,
            "shadows_reused": c.n_shadows_reused,
            "shadows_dropped": c.n_shadows_dropped,
        }

    # registers
    def reg_get(self, int index):
        return self.c.regs[index]

    def reg_set(self, int index, uint32_t value):
        self.c.regs[index] = value

    property eip:
        def __get__(self):
            return self.c.eip
        def __set__(self, uint32_t v):
            if v != self.c.eip:
                mmio_retire(self.c)     # an instruction an MMIO exit stopped is not resumed
            self.c.eip = v

    property apic_present:
        """A local APIC: IA32_APIC_BASE can enable it and CPUID reports it while enabled (set before
        a reset: the MSR takes its reset value from it)."""
        def __get__(self):
            return bool(self.c.apic_present)
        def __set__(self, bint present):
            self.c.apic_present = present
            self.c.msr_apic_base = 0xFEE00000ULL | APIC_BASE_BSP | (APIC_BASE_EN if present else 0)

    property msr_apic_base:
        """IA32_APIC_BASE (MSR 1Bh) as the guest last wrote it."""
        def __get__(self):
            return self.c.msr_apic_base

    property eflags:
        def __get__(self):
            return get_eflags(self.c)
        def __set__(self, uint32_t v):
            set_eflags(self.c, v, 0x003F7FD5)

    property icount:
        def __get__(self):
            return self.c.icount

    property progress:
        """Instructions retired plus exceptions and interrupts delivered plus REP string
        instructions suspended mid-way (ops_string.pxi): what budgets bound."""
        def __get__(self):
            return self.c.icount + self.c.n_exceptions + self.c.n_rep_chunks

    def seg_get(self, int index):
        cdef Seg* s = &self.c.seg[index]
        return (s.sel, s.base, s.limit, s.attr)

    def seg_set(self, int index, uint32_t sel, uint32_t base, uint32_t limit, uint32_t attr):
        """Set a segment register and its descriptor cache directly."""
        self.c.seg[index].sel = sel
        self.c.seg[index].base = base
        self.c.seg[index].limit = limit
        self.c.seg[index].attr = attr
        seg_set_limits(&self.c.seg[index], not self.c.pe)
        if index == S_CS:
            self.c.code32 = 1 if attr & 0x4000 else 0
            if self.c.pe:
                self.c.cpl = sel & 3
                tlb_select(self.c)
        elif index == S_SS:
            self.c.ss32 = 1 if attr & 0x4000 else 0
            self.c.ss_mask = 0xFFFFFFFFU if self.c.ss32 else 0xFFFF

    def seg_load(self, int index, uint32_t sel):
        """Load a segment register as MOV Sreg would (real mode: base = sel * 16).
        Returns the exception vector if the load faults, else None."""
        if index == S_CS:
            if self.c.pe:
                raise ValueError("CS is loaded by far transfers in protected mode")
            seg_load_real(self.c, S_CS, sel)
            return None
        if seg_load(self.c, index, sel):
            return self.c.exc_vector
        return None

    property real_mode:
        def __get__(self):
            return not self.c.pe

    property cpl:
        def __get__(self):
            return self.c.cpl

    def cr_get(self, int n):
        return (self.c.cr0, 0, self.c.cr2, self.c.cr3, self.c.cr4)[n]

    def cr_set(self, int n, uint32_t value):
        """Write CR0, CR2, CR3 or CR4 as MOV CRn would at CPL 0; ValueError if it would #GP."""
        if n not in (0, 2, 3, 4):
            raise ValueError(f"no CR{n}")
        if write_cr(self.c, n, value):
            raise ValueError(f"CR{n} value {value:#x} sets bits this CPU does not have or is invalid (#GP)")

    def raise_irq(self, int vector):
        """An external interrupt: delivered through the IDT (IVT) at the next instruction
        boundary where IF = 1 and no STI/MOV SS shadow is in effect."""
        if not 0 <= vector <= 255:
            raise ValueError(f"interrupt vector {vector} is not 0..255")
        self.c.irq_vector = vector
        self.c.irq_pending = 1
        update_attention(self.c)

    def set_intr(self, bint level):
        """The interrupt controller's INTR output. While it is up and the guest can take an
        interrupt, run() returns EXIT_INTR at an instruction boundary; the caller then
        acknowledges the controller and calls inject_interrupt(vector)."""
        self.c.intr_line = level
        update_attention(self.c)

    def inject_interrupt(self, int vector):
        """Deliver an external interrupt now, at the current instruction boundary.
        Returns False if the delivery shut the CPU down (triple fault)."""
        if not 0 <= vector <= 255:
            raise ValueError(f"interrupt vector {vector} is not 0..255")
        self.c.exc_vector = vector
        self.c.exc_has_err = 0
        self.c.exc_soft = 0
        self.c.n_irqs += 1
        self.c.exit_reason = EXIT_NONE
        if self.c.mon:
            self.c.n_reflections += 1     # the state is virtual here: reflected as it is
        return deliver_exception(self.c) == 0

    property shutdown_pending:
        def __get__(self):
            return self.c.exit_reason == EXIT_SHUTDOWN

    property interruptible:
        def __get__(self):
            return bool(self.c.eflags & FL_IF) and not self.c.int_shadow

    property irq_pending:
        def __get__(self):
            return bool(self.c.irq_pending)

    def set_a20(self, bint enabled):
        """Open or close the A20 gate: closed, physical address bit 20 reads as 0 (the 8086 wrap)."""
        cdef uint32_t mask = 0xFFFFFFFFU if enabled else 0xFFEFFFFFU
        if mask != self.c.a20_mask:
            self.c.a20_mask = mask
            tlb_flush_all(self.c)
            cache_flush(self.c)

    def set_tsc_host(self, origin_ns):
        """None: the TSC counts instructions (+ tsc_offset); an int: the TSC is the host's
        CLOCK_MONOTONIC (time.monotonic_ns) minus origin_ns."""
        self.c.tsc_host = 0 if origin_ns is None else 1
        self.c.tsc_origin_ns = 0 if origin_ns is None else origin_ns

    property tsc_offset:
        """Added to the instruction count to make the time stamp counter (RDTSC, MSR 0x10)."""
        def __get__(self):
            return self.c.tsc_offset
        def __set__(self, uint64_t v):
            self.c.tsc_offset = v

    property a20:
        def __get__(self):
            return self.c.a20_mask == 0xFFFFFFFFU

    def map_rom(self, rom):
        """Map a ROM image (uint8 numpy array, 64 KiB multiple, at most 1 MiB) at the top of
        memory and its last 128 KiB below 1 MiB, and put PAM in its reset state (set_pam: all of
        0xC0000-0xFFFFF to the PCI side, where that low window answers). The engine keeps a
        reference to the image."""
        cdef uint8_t[::1] view = rom
        cdef uint32_t size = view.shape[0]
        if size == 0 or size % 0x10000 or size > 0x100000:
            raise ValueError("a ROM image must be a multiple of 64 KiB, at most 1 MiB")
        self.rom_ref = rom
        self.c.rom = &view[0]
        self.c.rom_size = size
        self.c.rom_low_gpa = 0x100000 - (size if size < 0x20000 else 0x20000)
        # the chipset's reset state (PAM all 0): 0xC0000-0xFFFFF reads and writes go to the
        # PCI side, where the ROM's low window answers
        memset(self.c.pam, 0, PAM_PAGES)
        if self.c.jit != NULL:
            (<JitState*>self.c.jit).window_ready = 0     # the low ROM window leaves the JIT's window
        tlb_flush_all(self.c)
        cache_flush(self.c)

    def set_pam(self, int page_index, bint read_ram, bint write_ram, int count=1):
        """Route reads and writes of ``count`` 4 KiB pages of 0xC0000-0xFFFFF, from page
        ``page_index`` (0 = gpa 0xC0000, 63 = 0xFF000) on, to RAM or to the PCI side (the ROM's
        low window, else open bus), as the i440FX PAM registers do. Every cached view of a page
        that changes goes: the TLBs (the JIT's paged views with them), the blocks decoded from
        it and their translations, its mapping in the JIT's window."""
        cdef Cpu* c = self.c
        cdef int k
        cdef uint8_t want = (PAM_READ_RAM if read_ram else 0) | (PAM_WRITE_RAM if write_ram else 0)
        cdef bint changed = False
        if count < 1 or page_index < 0 or page_index + count > PAM_PAGES:
            raise ValueError(f"PAM pages {page_index}..{page_index + count - 1} are outside 0..{PAM_PAGES - 1}")
        for k in range(page_index, page_index + count):
            if c.pam[k] == want:
                continue
            c.pam[k] = want
            changed = True
            if (PAM_GPA >> 12) + k < c.ram_pages and c.code_map[(PAM_GPA >> 12) + k]:
                invalidate_code(c, (PAM_GPA >> 12) + k)   # its code bytes may now come from elsewhere
        if changed:
            tlb_flush_all(c)
            if c.jit != NULL:
                (<JitState*>c.jit).window_ready = 0     # jit_window_sync maps it or leaves it out

    def pam_get(self, int page_index):
        """(read_ram, write_ram) of PAM page page_index (0 = gpa 0xC0000)."""
        if not 0 <= page_index < PAM_PAGES:
            raise ValueError(f"PAM page {page_index} is outside 0..{PAM_PAGES - 1}")
        return bool(self.c.pam[page_index] & PAM_READ_RAM), bool(self.c.pam[page_index] & PAM_WRITE_RAM)

    def gdtr_set(self, uint32_t base, uint32_t limit):
        self.c.gdtr_base = base
        self.c.gdtr_limit = limit

    def idtr_set(self, uint32_t base, uint32_t limit):
        self.c.idtr_base = base
        self.c.idtr_limit = limit

    def idtr_get(self):
        return (self.c.idtr_base, self.c.idtr_limit)

    # exits
    def io_request(self):
        """(port, size, is_in, value) of the pending EXIT_IO."""
        return (self.c.io_port, self.c.io_size, bool(self.c.io_is_in), self.c.io_value)

    def io_complete_in(self, uint32_t value):
        """Deliver the value of a pending IN into AL/AX/EAX (INS: to ES:(E)DI). True if the
        store of an INS faulted into a triple fault: the machine shuts down."""
        cdef int sz = 0 if self.c.io_size == 1 else (1 if self.c.io_size == 2 else 2)
        self.c.io_more = 0
        if self.c.io_string:
            self.c.exit_reason = EXIT_NONE
            return ins_complete(self.c, value) != 0 and self.c.exit_reason == EXIT_SHUTDOWN
        setr_sz(self.c, R_EAX, sz, value)
        return False

    def io_ins_continue(self):
        """After io_complete_in() stored an element of a REP INS that has more to go: make the
        next element the pending IN again, without leaving and re-entering run(), when its
        destination passes the ES check that h_INS makes before the port is read (so no device
        data is read for an element that faults there); True if it did. The elements of one
        instruction then reach the device back to back, as a block transfer (QEMU's PIO does
        the same); no interrupt is taken between them."""
        cdef Cpu* c = self.c
        cdef int sz = 0 if c.io_size == 1 else (1 if c.io_size == 2 else 2)
        cdef uint32_t ea = c.regs[R_EDI] & (0xFFFFU if c.io_a16 else 0xFFFFFFFFU)
        cdef Seg* es = &c.seg[S_ES]
        if not c.io_more or <uint64_t>ea - es.lo[1][sz] > es.span[1][sz]:
            return False
        c.io_more = 0
        c.io_string = 1
        c.io_value = 0
        c.exit_reason = EXIT_IO
        return True

    def io_outs_continue(self):
        """After the device took an element of a REP OUTS that has more to go: the next element's
        value, read from DS:(E)SI (or its override) as h_OUTS reads it, with (E)SI and (E)CX
        stepped (and the instruction retired after its last element), so it goes to the device
        in the same exit; None when it cannot be read here without a fault (outside the
        segment, not in the software TLB, across a page) or under single-step: then run()
        executes the element as it does any. No interrupt is taken between the elements."""
        cdef Cpu* c = self.c
        cdef int sz = 0 if c.io_size == 1 else (1 if c.io_size == 2 else 2)
        cdef uint32_t amask = 0xFFFFU if c.io_a16 else 0xFFFFFFFFU
        cdef uint32_t ea, la, v = 0
        cdef int32_t delta = (1 << sz) * (-1 if c.eflags & FL_DF else 1)
        cdef Seg* s
        cdef TlbEntry* e
        if not c.io_outs_more or c.eflags & FL_TF:
            return None
        c.io_outs_more = 0
        s = &c.seg[c.io_seg]
        ea = c.regs[R_ESI] & amask
        if <uint64_t>ea - s.lo[0][sz] > s.span[0][sz]:
            return None
        la = s.base + ea
        e = &c.tlb[(la >> 12) & (TLB_SIZE - 1)]
        if e.tag_r != (la & 0xFFFFF000U) or (la & 0xFFF) + c.io_size > 4096:
            return None
        memcpy(&v, <void*>(<uintptr_t>la + e.addend), c.io_size)
        str_step(c, R_ESI, amask, delta)
        str_step(c, R_ECX, amask, -1)
        c.io_value = v
        if c.regs[R_ECX] & amask:
            c.io_outs_more = 1
        else:
            c.eip = c.io_next_eip           # retired, as end_of_block() retires an RC_EXIT
            c.icount += 1
        return v

    def mmio_map(self, uint32_t gpa, uint64_t size):
        """Make [gpa, gpa + size) an MMIO region: guest accesses there become EXIT_MMIO (memory.pxi).
        Whole pages outside RAM and the ROM, not overlapping another region; at most MMIO_REGIONS."""
        cdef Cpu* c = self.c
        cdef uint64_t end = <uint64_t>gpa + size
        cdef uint32_t k
        if size == 0 or (gpa & 0xFFF) or (size & 0xFFF) or end > 0x100000000ULL:
            raise ValueError(f"an MMIO region is whole 4 KiB pages inside the 4 GiB space: "
                             f"gpa {gpa:#x} size {size:#x}")
        if gpa < c.ram_size:
            raise ValueError(f"MMIO region at gpa {gpa:#x} overlaps guest RAM (0..{c.ram_size:#x})")
        if c.rom_size and end > 0x100000000ULL - c.rom_size:
            raise ValueError(f"MMIO region at gpa {gpa:#x} size {size:#x} overlaps the ROM at "
                             f"{0x100000000 - c.rom_size:#x}")
        for k in range(c.mmio_n):
            if gpa <= c.mmio_last[k] and end - 1 >= c.mmio_first[k]:
                raise ValueError(f"MMIO region at gpa {gpa:#x} size {size:#x} overlaps the one at "
                                 f"{c.mmio_first[k]:#x}..{c.mmio_last[k]:#x}")
        if c.mmio_n >= MMIO_REGIONS:
            raise ValueError(f"no room for another MMIO region (at most {MMIO_REGIONS})")
        c.mmio_first[c.mmio_n] = gpa
        c.mmio_last[c.mmio_n] = <uint32_t>(end - 1)
        c.mmio_n += 1

    def mmio_constant(self, uint32_t gpa, value):
        """Publish the aligned MMIO dword at gpa as reading ``value`` until withdrawn (``value``
        None): the engine answers its reads without an exit (memory.pxi)."""
        cdef Cpu* c = self.c
        cdef uint32_t k
        if value is not None and (gpa & 3 or mmio_region(c, gpa) < 0):
            raise ValueError(f"an MMIO constant is an aligned dword inside an MMIO region, not gpa {gpa:#x}")
        for k in range(c.mmio_const_n):
            if c.mmio_const_gpa[k] == gpa:
                if value is None:
                    c.mmio_const_n -= 1
                    c.mmio_const_gpa[k] = c.mmio_const_gpa[c.mmio_const_n]
                    c.mmio_const_value[k] = c.mmio_const_value[c.mmio_const_n]
                else:
                    c.mmio_const_value[k] = <uint32_t>value
                return
        if value is None:
            return
        if c.mmio_const_n >= MMIO_CONSTS:
            raise ValueError(f"no room for another MMIO constant (at most {MMIO_CONSTS})")
        c.mmio_const_gpa[c.mmio_const_n] = gpa
        c.mmio_const_value[c.mmio_const_n] = <uint32_t>value
        c.mmio_const_n += 1

    def mmio_constants_clear(self):
        """Withdraw every published MMIO constant."""
        self.c.mmio_const_n = 0

    def mmio_constants(self):
        """{gpa: value} of the published MMIO constants."""
        return {self.c.mmio_const_gpa[k]: self.c.mmio_const_value[k] for k in range(self.c.mmio_const_n)}

    def mmio_regions(self):
        """[(first gpa, last gpa)] of the MMIO regions."""
        return [(self.c.mmio_first[k], self.c.mmio_last[k]) for k in range(self.c.mmio_n)]

    def mmio_request(self):
        """(gpa, size, is_write, value) of the pending EXIT_MMIO (value: what is written, else 0)."""
        cdef uint32_t k
        if self.c.mmio_log_n == 0:
            return None
        k = self.c.mmio_log_n - 1
        return (self.c.mmio_log_gpa[k], self.c.mmio_log_size[k], bool(self.c.mmio_log_write[k]),
                self.c.mmio_log_value[k])

    def mmio_complete(self, uint32_t value=0):
        """The device serviced the pending EXIT_MMIO: ``value`` is what a read returns (ignored for
        a write). The next run() re-executes the instruction, which takes it."""
        cdef uint32_t k
        if self.c.mmio_log_n == 0:
            raise ValueError("no MMIO access is pending")
        k = self.c.mmio_log_n - 1
        if not self.c.mmio_log_write[k]:
            self.c.mmio_log_value[k] = value & (0xFFFFFFFFU >> (32 - 8 * self.c.mmio_log_size[k]))
        self.c.mmio_log_ready = 1

    def first_exception(self):
        """(vector, error code or None, eip) of the last exception chain's first exception."""
        if self.c.n_exceptions == 0:
            return None
        return (self.c.first_exc_vector,
                self.c.first_exc_err if self.c.first_exc_has_err else None,
                self.c.first_exc_eip)

    def set_until(self, until):
        if until is None:
            set_until(self.c, False, 0)
        else:
            set_until(self.c, True, <uint32_t>until)

    def notify_host_write(self, uint32_t gpa, uint32_t size):
        """The host wrote guest RAM: drop decoded code there."""
        invalidate_gpa_range(self.c, gpa, size)

    def flush(self):
        """Forget decoded code, translations, the TLB and the shadow page tables: after the
        host changed guest memory without telling (notify_host_write)."""
        cache_flush(self.c)
        tlb_flush_all(self.c)
        if self.c.roots != NULL:
            shadow_flush_all(self.c)

    def stats(self):
        cdef Cpu* c = self.c
        return {
            "instructions": c.icount,
            "blocks_decoded": c.n_blocks_decoded,
            "blocks_cached": c.nblocks,
            "block_lookups": c.n_block_lookups,
            "block_chain_hits": c.n_chain_hits,
            "tlb_hits": c.n_tlb_hits,
            "tlb_misses": c.n_tlb_misses,
            "tlb_flushes": c.n_tlb_flushes,
            "page_walks": c.n_page_walks,
            "page_faults": c.n_page_faults,
            "unmapped_reads": c.n_unmapped_reads,
            "unmapped_writes": c.n_unmapped_writes,
            "smc_invalidations": c.n_smc_invalidations,
            "cache_flushes": c.n_cache_flushes,
            "chain_evictions": c.n_chain_evictions,
            "exceptions": c.n_exceptions,
            "rep_chunks": c.n_rep_chunks,
            "interrupts": c.n_irqs,
            "rom_writes_ignored": c.n_rom_writes,
            "msr_unknown": c.n_msr_unknown,
            "mmio_reads": c.n_mmio_reads,
            "mmio_writes": c.n_mmio_writes,
            "mmio_open_bus": c.n_mmio_open_bus,
            "mmio_const_reads": c.n_mmio_const_reads,
        }

