# The JIT engine in the run loop (issue 10, ARCHITECTURE.md "The native engine"). Hot blocks of flat
# 32-bit protected-mode code with paging off become host code (jit_translate.h) that reaches guest
# RAM through the window: the identity map of RAM, with the pages that hold decoded code read-only
# (a write there faults out to the interpreter, which invalidates what it wrote over) and the ROM
# windows and everything past RAM unmapped (the interpreter's slow path gives them their meaning).
# Blocks charge their instructions on entry; a block the budget cannot pay for leaves to the
# interpreter before it runs, so counts, budgets and the virtual clock are those of the interpreter.

from posix.mman cimport mmap, munmap, mprotect, PROT_NONE, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FAILED

cdef extern from "jit_translate.h" nogil:
    ctypedef struct vmj_side:
        uint32_t host_off, eip, jblock, index
    ctypedef struct vmj_jblock:
        uint32_t eip, ninsn, entry_off, end_off
    ctypedef struct vmj_cache:
        vmj_arena arena
        vmj_side* side
        uint32_t n_side, cap_side
        vmj_jblock* blocks
        uint32_t n_blocks, cap_blocks
        uint32_t enter_off, exit_off, fault_off
        uint64_t n_translated, n_host_bytes, n_chained, n_flushes
    ctypedef struct vmj_ind_entry:
        uint32_t eip
        uint64_t host
    uint32_t VMJ_NO_STUB, VMJ_EXIT_STUB, VMJ_IND_OFF, VMJ_IND_SIZE
    int vmj_cache_open(vmj_cache* k, size_t arena_size, uint32_t max_blocks, uint32_t max_side,
                       vmj_ind_entry* ind)
    void vmj_ind_set(vmj_cache* k, uint32_t eip, uint32_t entry_off)
    void vmj_cache_close(vmj_cache* k)
    void vmj_cache_reset(vmj_cache* k)
    int vmj_translate(vmj_cache* k, uint32_t eip, const uint8_t* code, const uint8_t* lens, uint32_t n,
                      int last_is_branch)
    int vmj_patch_stub(vmj_cache* k, uint32_t stub_off, uint32_t entry_off)
    const vmj_side* vmj_side_at(const vmj_cache* k, uint32_t off)
    int vmj_block_at(const vmj_cache* k, uint32_t off)

cdef extern from "jit_window.h" nogil:
    int vmw_map_range(vmw_window* w, uint32_t gla_page, uint32_t gpa_page, uint32_t n, int prot)
    uint32_t VMW_FAULT_TRAP, VMW_FAULT_DIVIDE

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
    JIT_STATE_BYTES = 4096 + 4096 + 4096 * 16

cdef struct JitState:
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
    uint64_t n_faults_traced, n_faults_unmapped, n_faults_divide, n_interp_handoffs, n_flushes, n_translate_fails
    uint64_t n_jit_insns
    uint64_t translate_ns

from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

cdef inline uint64_t mono_ns() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return <uint64_t>t.tv_sec * 1000000000ULL + <uint64_t>t.tv_nsec

cdef inline bint rom_page(Cpu* c, uint32_t page) noexcept nogil:
    return c.rom_size != 0 and (c.rom_low_gpa >> 12) <= page < 0x100

cdef void jit_window_sync(Cpu* c) noexcept nogil:
    """Paging off: guest-linear = guest-physical. RAM read-write, decoded-code pages read-only, the
    low ROM window unmapped."""
    cdef JitState* J = <JitState*>c.jit
    cdef uint32_t page, lo
    vmw_map_range(&J.win, 0, 0, c.ram_pages, PROT_READ | PROT_WRITE)
    if c.rom_size:
        lo = c.rom_low_gpa >> 12
        for page in range(lo, 0x100 if 0x100 < c.ram_pages else c.ram_pages):
            vmw_unmap(&J.win, page)
    for page in range(c.ram_pages):
        if c.code_map[page] and not rom_page(c, page):
            vmw_protect(&J.win, page, PROT_READ)
    J.window_ready = 1

cdef inline void jit_code_page(Cpu* c, uint32_t page, bint has_code) noexcept nogil:
    """code_map[page] became non-zero (has_code) or zero: the window follows."""
    cdef JitState* J = <JitState*>c.jit
    if J.window_ready and page < c.ram_pages and not rom_page(c, page):
        vmw_protect(&J.win, page, PROT_READ if has_code else PROT_READ | PROT_WRITE)

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
    return (not (c.cr0 & CR0_PG) and c.a20_mask == 0xFFFFFFFFU and not c.until_active
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
    if blk.gpa != blk.eip or blk.eip >= c.ram_size or rom_page(c, blk.eip >> 12):
        return                  # ROM code, or an A20 alias: interpreted
    for k in range(blk.ninsn):
        i = &blk.insns[k]
        if i.fn == h_CALLOUT:
            break
        lens[n] = i.len
        total += i.len
        n += 1
    if n == 0 or blk.eip + total > c.ram_size or rom_page(c, (blk.eip + total - 1) >> 12):
        return
    t0 = mono_ns()
    if J.cache.n_blocks + 1 >= J.cache.cap_blocks or J.cache.arena.size - J.cache.arena.used < 65536 \
            or J.cache.cap_side - J.cache.n_side < MAX_BLOCK_INSNS + 2:
        jit_flush(c)
    jb = vmj_translate(&J.cache, blk.eip, c.ram + blk.eip, lens, n, 1 if n == blk.ninsn else 0)
    J.translate_ns += mono_ns() - t0
    if jb < 0:
        J.n_translate_fails += 1
        return
    blk.jit_block = jb

cdef int jit_run(Cpu* c, Block* blk, uint64_t stop_at) noexcept nogil:
    """Run translated code from blk until it leaves it; the CPU state is the interpreter's again after."""
    cdef JitState* J = <JitState*>c.jit
    cdef vmj_state* st = J.st
    cdef uint8_t* base = J.cache.arena.base
    cdef vmj_entry_t enter = <vmj_entry_t>(base + J.cache.enter_off)
    cdef uint32_t rc, off, k, f
    cdef Block* nb
    cdef vmj_jblock* jb
    cdef const vmj_side* s
    cdef int bi
    if not J.window_ready:
        jit_window_sync(c)
    for k in range(8):
        st.gpr[k] = c.regs[k]
    st.eflags = get_eflags(c)
    st.remaining = <int64_t>(stop_at - c.icount)
    st.window_base = <uintptr_t>J.win.base
    st.target = <uintptr_t>(base + J.cache.blocks[blk.jit_block].entry_off)
    J.ctx.code_lo = <uintptr_t>base
    J.ctx.code_hi = <uintptr_t>(base + J.cache.arena.used)
    J.ctx.fault_exit = <uintptr_t>(base + J.cache.fault_off)
    J.n_entries += 1
    while True:
        vmw_enter(&J.ctx)
        rc = enter(st)
        vmw_leave()
        if rc == VMJ_EXIT_STUB:
            if st.stub == VMJ_NO_STUB:
                J.n_indirect_exits += 1
            else:
                J.n_stub_exits += 1
            nb = lookup(c, st.next_eip, st.next_eip) if st.next_eip < c.ram_size else NULL
            if nb != NULL and nb.jit_block >= 0 and not c.attention:
                jb = &J.cache.blocks[nb.jit_block]
                if st.remaining >= <int64_t>jb.ninsn:
                    if st.stub != VMJ_NO_STUB:
                        vmj_patch_stub(&J.cache, st.stub, jb.entry_off)
                    else:
                        vmj_ind_set(&J.cache, st.next_eip, jb.entry_off)
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
        jb = &J.cache.blocks[s.jblock]
        st.remaining += jb.ninsn - s.index
        c.eip = s.eip
        if J.ctx.fault.kind == VMW_FAULT_DIVIDE:
            J.n_faults_divide += 1
        elif J.ctx.fault.gla < c.ram_size and c.code_map[J.ctx.fault.gla >> 12]:
            J.n_faults_traced += 1
        else:
            J.n_faults_unmapped += 1
        J.skip_once = 1         # the interpreter runs the instruction: #PF, ROM, open bus, code writes
        break
    for k in range(8):
        c.regs[k] = st.gpr[k]
    f = st.eflags
    set_arith_flags(c, f)
    c.eflags = (c.eflags & ~<uint32_t>FL_DF) | (f & FL_DF)
    J.n_jit_insns += <uint64_t>((stop_at - c.icount) - <uint64_t>st.remaining)
    c.icount = stop_at - <uint64_t>st.remaining
    return 0

cdef int jit_attach(Cpu* c, int ram_fd) noexcept nogil:
    """Give the engine a window over the RAM memfd and a code cache; 0 or -errno."""
    cdef JitState* J = <JitState*>calloc(1, sizeof(JitState))
    cdef int rc
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
    J.hot = JIT_HOT
    c.jit = J
    return 0

cdef void jit_detach(Cpu* c) noexcept nogil:
    cdef JitState* J = <JitState*>c.jit
    if J == NULL:
        return
    c.jit = NULL
    vmj_cache_close(&J.cache)
    vmw_release(&J.win)
    munmap(J.st_pages, JIT_STATE_BYTES)
    free(J)
