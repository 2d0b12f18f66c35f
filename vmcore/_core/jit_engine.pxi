# The JIT engine in the run loop (issue 10, ARCHITECTURE.md "The native engine"). Hot blocks of flat
# 32-bit protected-mode code become host code (jit_translate.h) that reaches guest memory through a
# window. With paging off it is the identity map of RAM, with the pages that hold decoded code
# read-only (a write there faults out to the interpreter, which invalidates what it wrote over) and
# the ROM windows and everything past RAM unmapped (the interpreter's slow path gives them their
# meaning). With paging on there are two views, supervisor (CPL 0-2) and user (CPL 3), like the
# software TLB's two halves: empty at first, filled page by page on window faults from the engine's
# own translation (page walk in bare, shadow page table under the monitor) with its permissions, and
# flushed exactly where the software TLB is (CR3 loads, INVLPG, paging-mode changes): the window is
# a second TLB. A page is mapped writable only after a write (so the walk sets the dirty bit) and
# never while it holds decoded code or is a traced guest page table.
# Blocks charge their instructions on entry; a block the budget cannot pay for leaves to the
# interpreter before it runs, so counts, budgets and the virtual clock are those of the interpreter.

from posix.mman cimport mmap, munmap, mprotect, PROT_NONE, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FAILED

cdef extern from "jit_translate.h" nogil:
    ctypedef struct vmj_side:
        uint32_t host_off, eip, jblock, index
    ctypedef struct vmj_jblock:
        uint32_t eip, ninsn, entry_off, ind_off, end_off
    ctypedef struct vmj_cache:
        vmj_arena arena
        vmj_side* side
        uint32_t n_side, cap_side
        vmj_jblock* blocks
        uint32_t n_blocks, cap_blocks
        uint32_t enter_off, exit_off, fault_off
        uint64_t n_translated, n_host_bytes, n_chained, n_flushes
        uint32_t n_patched
    ctypedef uint64_t vmj_ind_entry
    uint32_t VMJ_NO_STUB, VMJ_EXIT_STUB, VMJ_IND_OFF, VMJ_IND_SIZE
    int vmj_cache_open(vmj_cache* k, size_t arena_size, uint32_t max_blocks, uint32_t max_side,
                       vmj_ind_entry* ind)
    void vmj_ind_set(vmj_cache* k, uint32_t eip, uint32_t ind_entry_off)
    void vmj_cache_close(vmj_cache* k)
    void vmj_cache_reset(vmj_cache* k)
    int vmj_translate(vmj_cache* k, uint32_t eip, const uint8_t* code, const uint8_t* lens, uint32_t n,
                      int last_is_branch)
    int vmj_patch_stub(vmj_cache* k, uint32_t stub_off, uint32_t entry_off)
    int vmj_unchain(vmj_cache* k)
    const vmj_side* vmj_side_at(const vmj_cache* k, uint32_t off)
    int vmj_block_at(const vmj_cache* k, uint32_t off)

cdef extern from "jit_window.h" nogil:
    int vmw_map_range(vmw_window* w, uint32_t gla_page, uint32_t gpa_page, uint32_t n, int prot)
    int vmw_clear(vmw_window* w)
    uint32_t VMW_FAULT_TRAP, VMW_FAULT_DIVIDE, VMW_FAULT_WINDOW

cdef enum:
    JIT_HOT = 16                # interpreted runs of a block before it is translated
    JIT_ARENA = 32 << 20
    JIT_MAX_BLOCKS = 1 << 18
    JIT_MAX_SIDE = 1 << 21
    # the decode mode a translated block needs (engine.pxi mode_key): CS.D, SS.B, PE, not VM, not
    # TF, flat ES SS DS
    JIT_MODE_MASK = 0x1 | 0x2 | 0x4 | 0x8 | 0x100 | (1 << 16) | (1 << 18) | (1 << 19)
    JIT_MODE_WANT = 0x1 | 0x2 | 0x4 | (1 << 16) | (1 << 18) | (1 << 19)
    # the state's pages: the budget trap, the state, the indirect-branch table
    JIT_STATE_BYTES = 4096 + 4096 + 65536 * 8

cdef enum:
    PV_FILLED_MAX = 4096        # filled pages a view lists before a flush clears its whole table
    WMAP_MANY = 0xFFFFFFFF
    FILL_DONE = 0
    FILL_TRUE = 1
    FILL_SLOW = 2
    # paged code runs translated only while the guest goes this many instructions between TLB flushes
    # (on average, or since the last one): each flush empties the views, and refilling a page costs a host fault and an mmap
    # (~6 us, the time of ~1,500 interpreted instructions), so a guest that switches address spaces
    # every few thousand instructions (a ping-pong over pipes) is faster in the interpreter
    PAGED_MIN_INTERVAL = 200000
    # what a fault out of host code (a signal, ~3 us) or an undone chain costs, in the instructions
    # host code must run to pay for it; past PENALTY_MAX owed, the interpreter runs the guest for
    # PENALTY_PAUSE instructions (a guest that faults or switches privilege every few hundred
    # instructions: page-fault and divide-error loops, system-call storms)
    FAULT_PENALTY = 3000
    UNCHAIN_PENALTY = 1000
    ENTRY_PENALTY = 40          # an entry and exit (~100 ns): a block that runs a few instructions
                                # between untranslated ones (CLI; STI; DEC; JNZ) loses here
    PENALTY_MAX = 200000
    PENALTY_PAUSE = 2000000

cdef struct PagedView:
    vmw_window w
    uint32_t* gla_gpa           # per gla page: (gpa page << 1 | writable) + 1 while mapped, else 0
    uint32_t* filled            # the gla pages mapped since the last flush
    uint32_t n_filled
    uint32_t overflow           # more than PV_FILLED_MAX: the flush clears all of gla_gpa

cdef struct JitState:
    PagedView pv[2]             # paging on: the supervisor and the user view
    uint32_t* wmap              # per gpa page: (gla page << 2 | view) + 1 of its one writable
                                # paged mapping, WMAP_MANY for several, 0 for none
    uint32_t chain_gen          # bumped where chains may break: TLB flushes, INVLPG of a code page
    uint32_t chain_epoch        # chain_gen when the stubs were patched and the indirect table filled
    uint8_t* code_glas          # per gla page: 1 if a translated block lies in it
    uint32_t chain_view         # the view they were made in (2: paging off)
    uint64_t last_fault_rip
    uint32_t last_fault_gla
    uint64_t n_hidden_fills, n_view_flushes, n_unchains, n_paged_declined
    uint64_t last_flush_icount  # c.icount at the last TLB flush
    uint64_t flush_interval     # running average of instructions between TLB flushes
    uint64_t paged_min_interval # PAGED_MIN_INTERVAL, or what a test sets
    uint64_t penalty            # instructions of host code still owed for faults and unchains
    uint64_t pause_until        # c.icount before which the interpreter runs everything
    uint64_t n_pauses
    vmw_window win
    vmw_context ctx
    vmj_cache cache
    vmj_state* st      # page aligned; the page below it is the budget trap, the indirect-branch
                        # table follows it (jit_translate.h VMJ_IND_OFF)
    uint8_t* st_pages
    uint32_t window_ready   # the window maps RAM as code_map and the ROM windows say
    uint32_t handler_on     # the SIGSEGV handler is installed for this run()
    uint32_t skip_once      # interpret the next block (an instruction that faulted in host code)
    uint32_t hot            # interpreted runs of a block before it is translated (JIT_HOT)
    uint64_t n_entries, n_stub_exits, n_indirect_exits, n_budget_exits
    uint64_t n_faults_traced, n_faults_unmapped, n_faults_divide, n_faults_true, n_interp_handoffs, n_flushes, n_translate_fails
    uint64_t n_jit_insns
    uint64_t translate_ns

from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

cdef inline uint64_t mono_ns() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return <uint64_t>t.tv_sec * 1000000000ULL + <uint64_t>t.tv_nsec

cdef inline bint rom_page(Cpu* c, uint32_t page) noexcept nogil:
    """A gpa page in 0xC0000-0xFFFFF whose PAM state does not send both reads and writes to RAM
    (the ROM's low window, open bus, read-only or write-only shadow RAM): the JIT never maps,
    translates or fills it; the interpreter's pam_access serves it."""
    return <uint32_t>(page - (PAM_GPA >> 12)) < PAM_PAGES and c.pam[page - (PAM_GPA >> 12)] != PAM_RAM

cdef void jit_window_sync(Cpu* c) noexcept nogil:
    """Paging off: guest-linear = guest-physical. RAM read-write, decoded-code pages read-only, the
    pages of 0xC0000-0xFFFFF that PAM does not give to RAM unmapped."""
    cdef JitState* J = <JitState*>c.jit
    cdef uint32_t page
    vmw_map_range(&J.win, 0, 0, c.ram_pages, PROT_READ | PROT_WRITE)
    for page in range(PAM_GPA >> 12, (PAM_GPA + PAM_SIZE) >> 12):
        if page < c.ram_pages and rom_page(c, page):
            vmw_unmap(&J.win, page)
    for page in range(c.ram_pages):
        if c.code_map[page] and not rom_page(c, page):
            vmw_protect(&J.win, page, PROT_READ)
    J.window_ready = 1

cdef inline void jit_code_page(Cpu* c, uint32_t page, bint has_code) noexcept nogil:
    """code_map[page] became non-zero (has_code) or zero: the identity window follows (the paged
    views lose write access through jit_drop_write; they regain it on the next write fault)."""
    cdef JitState* J = <JitState*>c.jit
    if J.window_ready and page < c.ram_pages and not rom_page(c, page):
        vmw_protect(&J.win, page, PROT_READ if has_code else PROT_READ | PROT_WRITE)

cdef void pv_flush(Cpu* c, int v) noexcept nogil:
    """Empty paged view v (as the software TLB is flushed)."""
    cdef JitState* J = <JitState*>c.jit
    cdef PagedView* P = &J.pv[v]
    cdef uint32_t k
    if P.n_filled == 0 and not P.overflow:
        return
    vmw_clear(&P.w)
    if P.overflow:
        memset(P.gla_gpa, 0, (1 << 20) * sizeof(uint32_t))
    else:
        for k in range(P.n_filled):
            P.gla_gpa[P.filled[k]] = 0
    P.n_filled = 0
    P.overflow = 0
    J.n_view_flushes += 1

cdef void jit_unchain(Cpu* c) noexcept nogil:
    cdef JitState* J = <JitState*>c.jit
    if J.cache.n_patched:
        J.n_unchains += 1
    vmj_unchain(&J.cache)

cdef void jit_tlb_flush(Cpu* c) noexcept nogil:
    """tlb_flush_all / tlb_flush_nonglobal: both paged views (global pages too: a conservative TLB)."""
    cdef JitState* J = <JitState*>c.jit
    cdef uint64_t interval = c.icount - J.last_flush_icount
    J.chain_gen += 1
    J.flush_interval = (J.flush_interval * 7 + interval) // 8
    J.last_flush_icount = c.icount
    pv_flush(c, 0)
    pv_flush(c, 1)

cdef void jit_tlb_flush_page(Cpu* c, uint32_t gla) noexcept nogil:
    """INVLPG of gla: both paged views forget its page."""
    cdef JitState* J = <JitState*>c.jit
    cdef int v
    if J.code_glas[gla >> 12]:
        J.chain_gen += 1        # chains into code on this page may lead elsewhere now
    for v in range(2):
        if J.pv[v].gla_gpa[gla >> 12]:
            vmw_unmap(&J.pv[v].w, gla >> 12)
            J.pv[v].gla_gpa[gla >> 12] = 0

cdef void jit_drop_write(Cpu* c, uint32_t gpa_page) noexcept nogil:
    """tlb_drop_write: gpa_page now holds decoded code or a traced page table; no paged view may
    write it without faulting."""
    cdef JitState* J = <JitState*>c.jit
    cdef uint32_t e, gla_page
    cdef int v
    if gpa_page >= c.ram_pages:
        return
    e = J.wmap[gpa_page]
    if e == 0:
        return
    J.wmap[gpa_page] = 0
    if e == WMAP_MANY:
        jit_tlb_flush(c)
        return
    v = (e - 1) & 3
    gla_page = (e - 1) >> 2
    if J.pv[v].gla_gpa[gla_page] == ((gpa_page << 1) | 1) + 1:
        vmw_protect(&J.pv[v].w, gla_page, PROT_READ)
        J.pv[v].gla_gpa[gla_page] = (gpa_page << 1) + 1

cdef int translate_fill(Cpu* c, uint32_t gla, int is_write, uint32_t* gpa) noexcept nogil:
    """The translation an access at the current privilege gets, for a window fill: the software
    TLB's when it holds one (stale or not: the window and the TLB are one TLB to the guest), else
    the engine's walk, which then fills the TLB as the interpreter's slow path would. A fault leaves
    no trace (the interpreter raises it when it runs the instruction)."""
    cdef uint32_t w, g, page
    cdef uint32_t tag = gla & 0xFFFFF000U
    cdef TlbEntry* e = &c.tlb[(gla >> 12) & (TLB_SIZE - 1)]
    if e.tag_r == tag and e.gpa_page < c.ram_pages and (not is_write or e.tag_w == tag):
        gpa[0] = (e.gpa_page << 12) | (gla & 0xFFF)
        return 0
    cdef uint32_t saved_cr2 = c.cr2
    cdef uint64_t saved_pf = c.n_page_faults, saved_true = c.n_true_faults
    cdef int saved_vector = c.exc_vector, saved_has_err = c.exc_has_err
    cdef uint32_t saved_err = c.exc_err
    if translate_full(c, gla, is_write, gpa, &w, &g):
        c.cr2 = saved_cr2
        c.n_page_faults = saved_pf
        c.n_true_faults = saved_true
        c.exc_vector = saved_vector
        c.exc_has_err = saved_has_err
        c.exc_err = saved_err
        return RC_FAULT
    page = gpa[0] >> 12
    if page < c.ram_pages and not rom_page(c, page):
        e = tlb_fill_ram(c, gla, page, g)
        if is_write and w and c.code_map[page] == 0 and not c.traced[page]:
            e.tag_w = tag
    return 0

cdef int pv_fill(Cpu* c, int v, uint32_t gla, bint is_write) noexcept nogil:
    """A window fault at gla in paged view v: map the page if the access is allowed and plain RAM
    (FILL_DONE); else the interpreter must run the instruction: FILL_TRUE for the guest's own #PF,
    FILL_SLOW for ROM, open bus or a write to a traced page."""
    cdef JitState* J = <JitState*>c.jit
    cdef PagedView* P = &J.pv[v]
    cdef uint32_t gpa, page, gla_page = gla >> 12
    cdef bint rw
    if translate_fill(c, gla, is_write, &gpa):
        return FILL_TRUE
    page = gpa >> 12
    if page >= c.ram_pages or rom_page(c, page):
        return FILL_SLOW
    rw = is_write and c.code_map[page] == 0 and not c.traced[page]
    if is_write and not rw:
        return FILL_SLOW
    if vmw_map(&P.w, gla_page, page, PROT_READ | (PROT_WRITE if rw else 0)) != 0:
        return FILL_SLOW
    if P.gla_gpa[gla_page] == 0:
        if P.n_filled < PV_FILLED_MAX:
            P.filled[P.n_filled] = gla_page
            P.n_filled += 1
        else:
            P.overflow = 1
    P.gla_gpa[gla_page] = ((page << 1) | (1 if rw else 0)) + 1
    if rw:
        if J.wmap[page] == 0 or J.wmap[page] == ((gla_page << 2) | <uint32_t>v) + 1:
            J.wmap[page] = ((gla_page << 2) | <uint32_t>v) + 1
        else:
            J.wmap[page] = WMAP_MANY
    J.n_hidden_fills += 1
    return FILL_DONE

cdef void jit_flush(Cpu* c) noexcept nogil:
    """Forget every translation (a translated block's guest code changed, or the cache is full)."""
    cdef JitState* J = <JitState*>c.jit
    cdef uint32_t k
    for k in range(c.nblocks):
        c.blocks[k].jit_block = -1
        c.blocks[k].jit_heat = 0
    vmj_cache_reset(&J.cache)
    J.n_flushes += 1

cdef inline bint jit_mode_ok(Cpu* c) noexcept nogil:
    """What a translated block needs of the CPU beyond its decode mode."""
    return (c.a20_mask == 0xFFFFFFFFU and not c.until_active
            and c.seg[S_CS].base == 0 and c.seg[S_CS].limit == 0xFFFFFFFFU)

cdef void jit_translate_block(Cpu* c, Block* blk) noexcept nogil:
    cdef JitState* J = <JitState*>c.jit
    cdef uint8_t lens[MAX_BLOCK_INSNS + 1]
    cdef uint32_t k, n = 0, total = 0
    cdef Insn* i
    cdef int jb
    cdef uint64_t t0
    if (blk.mode & JIT_MODE_MASK) != JIT_MODE_WANT or blk.cs_base != 0 or not jit_mode_ok(c):
        return
    if blk.gpa >= c.ram_size or rom_page(c, blk.gpa >> 12) or (blk.page1 != blk.page0 and blk.page1 != blk.page0 + 1):
        return                  # ROM code, or bytes on two pages apart in RAM: interpreted
    if not (c.cr0 & CR0_PG) and blk.gpa != blk.eip:
        return
    for k in range(blk.ninsn):
        i = &blk.insns[k]
        if i.fn == h_CALLOUT or i.fn == h_ADAPTIVE:
            break
        lens[n] = i.len
        total += i.len
        n += 1
    if n == 0 or blk.gpa + total > c.ram_size or rom_page(c, (blk.gpa + total - 1) >> 12):
        return
    t0 = mono_ns()
    if J.cache.n_blocks + 1 >= J.cache.cap_blocks or J.cache.arena.size - J.cache.arena.used < 65536 \
            or J.cache.cap_side - J.cache.n_side < MAX_BLOCK_INSNS + 2:
        jit_flush(c)
    jb = vmj_translate(&J.cache, blk.eip, c.ram + blk.gpa, lens, n, 1 if n == blk.ninsn else 0)
    J.translate_ns += mono_ns() - t0
    if jb < 0:
        J.n_translate_fails += 1
        return
    blk.jit_block = jb
    J.code_glas[blk.eip >> 12] = 1
    J.code_glas[(blk.end_eip - 1) >> 12] = 1

cdef int jit_run(Cpu* c, Block* blk, uint64_t stop_at) noexcept nogil:
    """Run translated code from blk until it leaves it; the CPU state is the interpreter's again after.
    0 when it declines (paged code while TLB flushes come too often): the interpreter runs blk."""
    cdef JitState* J = <JitState*>c.jit
    cdef vmj_state* st = J.st
    cdef uint8_t* base = J.cache.arena.base
    cdef vmj_entry_t enter = <vmj_entry_t>(base + J.cache.enter_off)
    cdef uint32_t rc, off, k, f
    cdef Block* nb
    cdef vmj_jblock* jb
    cdef const vmj_side* s
    cdef int bi, view, fill = FILL_SLOW
    cdef uint64_t ran
    cdef uint32_t gpa
    cdef bint paged = (c.cr0 & CR0_PG) != 0
    if paged and J.flush_interval < J.paged_min_interval and c.icount - J.last_flush_icount < J.paged_min_interval:
        J.n_paged_declined += 1
        return 0
    if c.icount < J.pause_until:
        return 0
    view = (1 if c.cpl == 3 else 0) if paged else 2
    if view == 2:
        if not J.window_ready:
            jit_window_sync(c)
        st.window_base = <uintptr_t>J.win.base
        J.ctx.window = &J.win
    else:
        st.window_base = <uintptr_t>J.pv[view].w.base
        J.ctx.window = &J.pv[view].w
    if J.chain_gen != J.chain_epoch or view != J.chain_view:
        # chains and the indirect table hold translations of code addresses: made under other
        # page tables or another privilege, they may not hold here
        if J.cache.n_patched:
            J.penalty += UNCHAIN_PENALTY
        jit_unchain(c)
        J.chain_epoch = J.chain_gen
        J.chain_view = view
    for k in range(8):
        st.gpr[k] = c.regs[k]
    st.eflags = get_eflags(c)
    st.remaining = <int64_t>(stop_at - c.icount)
    st.target = <uintptr_t>(base + J.cache.blocks[blk.jit_block].entry_off)
    J.ctx.code_lo = <uintptr_t>base
    J.ctx.code_hi = <uintptr_t>(base + J.cache.arena.used)
    J.ctx.fault_exit = <uintptr_t>(base + J.cache.fault_off)
    J.n_entries += 1
    J.penalty += ENTRY_PENALTY
    while True:
        vmw_enter(&J.ctx)
        rc = enter(st)
        vmw_leave()
        if rc == VMJ_EXIT_STUB:
            if st.stub == VMJ_NO_STUB:
                J.n_indirect_exits += 1
            else:
                J.n_stub_exits += 1
            nb = NULL
            if not paged:
                gpa = st.next_eip
            elif translate_quiet(c, st.next_eip, &gpa) != 0:
                gpa = 0xFFFFFFFFU
            if gpa < c.ram_size:
                nb = lookup(c, st.next_eip, gpa)
            # (a pending interrupt or other attention is inert here: attend() ran before this block
            # and nothing host code runs can make it deliverable)
            if nb != NULL and nb.jit_block >= 0:
                jb = &J.cache.blocks[nb.jit_block]
                if st.remaining >= <int64_t>jb.ninsn:
                    if st.stub != VMJ_NO_STUB:
                        vmj_patch_stub(&J.cache, st.stub, jb.entry_off)
                    else:
                        vmj_ind_set(&J.cache, st.next_eip, jb.ind_off)
                    st.target = <uintptr_t>(base + jb.entry_off)
                    continue
            c.eip = st.next_eip
            break
        off = <uint32_t>(J.ctx.fault.rip - <uintptr_t>base)
        if J.ctx.fault.kind == VMW_FAULT_TRAP:
            # the budget cannot pay for this block: it has not started
            J.n_budget_exits += 1
            bi = vmj_block_at(&J.cache, off)
            st.remaining += J.cache.blocks[bi].ninsn
            c.eip = J.cache.blocks[bi].eip
            break
        s = vmj_side_at(&J.cache, off)
        if (paged and J.ctx.fault.kind == VMW_FAULT_WINDOW
                and not (J.ctx.fault.rip == J.last_fault_rip and J.ctx.fault.gla == J.last_fault_gla)):
            J.last_fault_rip = J.ctx.fault.rip
            J.last_fault_gla = J.ctx.fault.gla
            fill = pv_fill(c, view, J.ctx.fault.gla, J.ctx.fault.write)
            if fill == FILL_DONE:
                # a hidden fault: the page is there now; the instruction starts over in host code
                st.target = <uintptr_t>(base + s.host_off)
                continue
        J.last_fault_rip = 0
        jb = &J.cache.blocks[s.jblock]
        st.remaining += jb.ninsn - s.index
        c.eip = s.eip
        if J.ctx.fault.kind == VMW_FAULT_DIVIDE:
            J.n_faults_divide += 1
        elif fill == FILL_TRUE:
            J.n_faults_true += 1        # the guest's own page fault: the interpreter raises it
        elif J.ctx.fault.gla < c.ram_size and c.code_map[J.ctx.fault.gla >> 12]:
            J.n_faults_traced += 1
        else:
            J.n_faults_unmapped += 1
        J.skip_once = 1         # the interpreter runs the instruction: #PF, ROM, open bus, code writes
        J.penalty += FAULT_PENALTY
        break
    for k in range(8):
        c.regs[k] = st.gpr[k]
    f = st.eflags
    set_arith_flags(c, f)
    c.eflags = (c.eflags & ~<uint32_t>FL_DF) | (f & FL_DF)
    ran = <uint64_t>((stop_at - c.icount) - <uint64_t>st.remaining)
    J.n_jit_insns += ran
    c.icount = stop_at - <uint64_t>st.remaining
    J.penalty = J.penalty - ran if J.penalty > ran else 0
    if J.penalty > PENALTY_MAX and J.paged_min_interval:
        J.penalty = 0
        J.pause_until = c.icount + PENALTY_PAUSE
        J.n_pauses += 1
    return 1

cdef int jit_attach(Cpu* c, int ram_fd) noexcept nogil:
    """Give the engine a window over the RAM memfd and a code cache; 0 or -errno."""
    cdef JitState* J = <JitState*>calloc(1, sizeof(JitState))
    cdef int rc, v
    if J == NULL:
        return -12
    rc = vmw_reserve(&J.win, ram_fd, c.ram_pages, NULL)
    if rc != 0:
        free(J)
        return rc
    J.st_pages = <uint8_t*>mmap(NULL, JIT_STATE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if <void*>J.st_pages == MAP_FAILED:
        vmw_release(&J.win)
        free(J)
        return -12
    mprotect(J.st_pages, 4096, PROT_NONE)
    J.st = <vmj_state*>(J.st_pages + 4096)
    if vmj_cache_open(&J.cache, JIT_ARENA, JIT_MAX_BLOCKS, JIT_MAX_SIDE,
                      <vmj_ind_entry*>(J.st_pages + 4096 + VMJ_IND_OFF)) != 0:
        munmap(J.st_pages, JIT_STATE_BYTES)
        vmw_release(&J.win)
        free(J)
        return -12
    J.ctx.window = &J.win
    J.ctx.trap_lo = <uintptr_t>J.st_pages
    J.ctx.trap_hi = <uintptr_t>(J.st_pages + 4096)
    for v in range(2):
        if vmw_reserve(&J.pv[v].w, ram_fd, c.ram_pages, NULL) != 0:
            jit_free(J)
            return -12
        J.pv[v].gla_gpa = <uint32_t*>calloc(1 << 20, sizeof(uint32_t))
        J.pv[v].filled = <uint32_t*>calloc(PV_FILLED_MAX, sizeof(uint32_t))
        if J.pv[v].gla_gpa == NULL or J.pv[v].filled == NULL:
            jit_free(J)
            return -12
    J.wmap = <uint32_t*>calloc(c.ram_pages, sizeof(uint32_t))
    J.code_glas = <uint8_t*>calloc(1 << 20, 1)
    if J.wmap == NULL or J.code_glas == NULL:
        jit_free(J)
        return -12
    J.hot = JIT_HOT
    J.chain_view = 2
    J.flush_interval = PAGED_MIN_INTERVAL
    J.paged_min_interval = PAGED_MIN_INTERVAL
    c.jit = J
    return 0

cdef void jit_free(JitState* J) noexcept nogil:
    cdef int v
    vmj_cache_close(&J.cache)
    vmw_release(&J.win)
    for v in range(2):
        vmw_release(&J.pv[v].w)
        free(J.pv[v].gla_gpa)
        free(J.pv[v].filled)
    free(J.wmap)
    free(J.code_glas)
    munmap(J.st_pages, JIT_STATE_BYTES)
    free(J)

cdef void jit_detach(Cpu* c) noexcept nogil:
    cdef JitState* J = <JitState*>c.jit
    if J == NULL:
        return
    c.jit = NULL
    jit_free(J)
