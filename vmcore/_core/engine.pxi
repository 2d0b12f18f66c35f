# The block cache and the run loop: run until an exit (ARCHITECTURE.md, "The
# engine contract"). Blocks are decoded once, looked up by EIP (plus CS base
# and decode mode), chained to their successors, and invalidated page by page
# when their code bytes are written.

cdef inline void update_attention(Cpu* c) noexcept nogil:
    """Recompute the one word the run loop tests on the way into every block."""
    c.attention = (c.until_active | c.intr_line | c.irq_pending | c.int_shadow | c.db_pending | c.yield_now
                   | (c.mmio_log_n != 0))

cdef inline void add_slow_work(Cpu* c, uint64_t units) noexcept nogil:
    """Work that retires no instruction (scanning the block cache, delivering exceptions):
    past SLOW_WORK_SLICE units run() returns early (EXIT_BUDGET), so its caller's timeout holds
    even for a guest that only faults or rewrites its code."""
    c.slow_work += units
    if c.slow_work > SLOW_WORK_SLICE and not c.yield_now:
        c.yield_now = 1
        update_attention(c)

cdef inline void single_step_trap(Cpu* c) noexcept nogil:
    """The #DB after an instruction that began with EFLAGS.TF set (SDM Vol. 3 §17.3.1.4)."""
    c.dr[6] |= 0x4000
    c.exc_vector = EXC_DB
    c.exc_has_err = 0
    c.exc_soft = 0

cdef inline uint32_t hash_eip(uint32_t eip, uint32_t cs_base) noexcept nogil:
    """The bucket of a block: by its linear address, so that real-mode code at one IP under
    many CS bases spreads over the table."""
    cdef uint32_t gla = eip + cs_base
    return (gla ^ (gla >> HASH_BITS) ^ (cs_base >> 4)) & (HASH_SIZE - 1)

cdef inline uint32_t mode_key(Cpu* c) noexcept nogil:
    """What decoding depends on besides the bytes: code and stack size, protection."""
    return (c.code32 | (c.ss32 << 1) | (c.pe << 2) | (((c.eflags >> 17) & 1) << 3) | (c.eflags & FL_TF)
            | (c.seg[0].flat << 16) | (c.seg[1].flat << 17) | (c.seg[2].flat << 18)
            | (c.seg[3].flat << 19) | (c.seg[4].flat << 20) | (c.seg[5].flat << 21)
            | (c.vring0 << 22))     # under the monitor: guest-kernel code (bt: translated)

cdef void cache_flush(Cpu* c) noexcept nogil:
    """Forget every block (arena full, or a global change such as a mode switch)."""
    cdef uint32_t k
    for k in range(HASH_SIZE):
        c.htab[k] = NULL
    for k in range(c.ram_pages):
        c.code_map[k] = 0
    c.nblocks = 0
    c.ninsns = 0
    c.cur_block = NULL
    c.n_cache_flushes += 1
    xlat_drop_all(c)        # the code map no longer guards them
    if c.jit != NULL:
        jit_flush(c)
        (<JitState*>c.jit).window_ready = 0     # code pages are writable again

cdef void unhash(Cpu* c, Block* b) noexcept nogil:
    cdef Block** link = &c.htab[hash_eip(b.eip, b.cs_base)]
    while link[0] != NULL:
        if link[0] == b:
            link[0] = b.hash_next
            return
        link = &link[0].hash_next

cdef void kill_block(Cpu* c, Block* b) noexcept nogil:
    """Unlink b; records of a block that may be running are made to restart."""
    cdef uint32_t k
    b.valid = 0
    unhash(c, b)
    if b.jit_block >= 0 and c.jit != NULL:
        jit_flush(c)        # chained translations may jump into it
    for k in range(b.ninsn + 1):
        b.insns[k].fn = h_STALE

cdef void invalidate_code(Cpu* c, uint32_t gpa_page) noexcept nogil:
    """Code bytes on gpa_page were written: drop every block that read them."""
    cdef uint32_t k
    cdef Block* b
    c.code_map[gpa_page] = 0
    if c.jit != NULL:
        jit_code_page(c, gpa_page, False)
    xlat_drop_page(c, gpa_page)
    add_slow_work(c, c.nblocks + 64)
    for k in range(c.nblocks):
        b = &c.blocks[k]
        if b.valid and (b.page0 == gpa_page or b.page1 == gpa_page):
            kill_block(c, b)
    c.n_smc_invalidations += 1

cdef void invalidate_gpa_range(Cpu* c, uint32_t gpa, uint32_t size) noexcept nogil:
    """The host wrote guest memory: same effect as a guest write."""
    cdef uint32_t page
    if size == 0:
        return
    page = gpa >> 12
    while page <= (gpa + size - 1) >> 12 and page < c.ram_pages:
        if c.code_map[page]:
            invalidate_code(c, page)
        if c.traced[page]:
            shadow_flush_all(c)
        page += 1

cdef inline void mark_code_gpa(Cpu* c, uint32_t page, uint32_t off, uint32_t size) noexcept nogil:
    """Bytes [off, off + size) of gpa page hold code: writes to the page now reach mem_slow."""
    if c.code_map[page] == 0:
        tlb_drop_write(c, page)
        if c.jit != NULL:
            jit_code_page(c, page, True)
    c.code_map[page] |= chunk_bits(off, size)

cdef void mark_code(Cpu* c, uint32_t gla_start, uint32_t gla_end) noexcept nogil:
    """Record that [gla_start, gla_end) holds decoded code: at most two pages (a block never
    spans more; 16-bit code that wraps at IP 0xFFFF is marked as two ranges by its caller)."""
    cdef uint32_t gla = gla_start
    cdef uint32_t gpa, chunk_end
    cdef int pages = 0
    while gla != gla_end and pages < 2:
        chunk_end = (gla | 0xFFF) + 1
        if chunk_end - gla > gla_end - gla:
            chunk_end = gla_end
        if translate_quiet(c, gla, &gpa) == 0 and gpa < c.ram_size:
            mark_code_gpa(c, gpa >> 12, gpa & 0xFFF, chunk_end - gla)
        gla = chunk_end
        pages += 1
    add_slow_work(c, 16 * pages)

cdef Block* lookup(Cpu* c, uint32_t eip, uint32_t gpa) noexcept nogil:
    cdef uint32_t cs_base = c.seg[S_CS].base
    cdef Block* b = c.htab[hash_eip(eip, cs_base)]
    cdef uint32_t mode = mode_key(c)
    cdef uint32_t walked = 0
    c.n_block_lookups += 1
    while b != NULL:
        if b.eip == eip and b.gpa == gpa and b.cs_base == cs_base and b.mode == mode:
            return b
        b = b.hash_next
        walked += 1
    add_slow_work(c, walked)        # chains are bounded (MAX_CHAIN), and their walks counted
    return NULL

cdef inline int code_gpa(Cpu* c, uint32_t gla, uint32_t* gpa) noexcept nogil:
    """Where the next instruction's first byte is, through the TLB when it can be."""
    cdef TlbEntry* e
    if not (c.cr0 & CR0_PG):
        gpa[0] = gla & c.a20_mask       # as decode_block records it: an A20 alias hits
        return 0
    e = &c.tlb[(gla >> 12) & (TLB_SIZE - 1)]
    if e.tag_r == (gla & 0xFFFFF000U) and e.gpa_page != 0xFFFFFFFEU:
        gpa[0] = (e.gpa_page << 12) | (gla & 0xFFF)
        return 0
    # a miss, or a ROM page (whose entry does not name its gpa): the gpa decode_block records
    return translate(c, gla, gpa)

cdef Block* decode_block(Cpu* c, uint32_t eip, uint32_t max_insns, bint cache) noexcept nogil:
    """Decode from eip until a block-ending instruction, max_insns, the end of
    the page, or the `until` address. cache=False decodes into a scratch block
    that is not entered in the hash (single steps at the end of a budget).
    bt, guest-kernel code: each instruction takes the scanner's action, a callout
    replacing its handler; NULL if the first one is not scanned (xlat_miss_*)."""
    cdef Block* b
    cdef Insn* insns
    cdef uint32_t n = 0, cur = eip, gpa, last_gla, chain = 0, bucket
    cdef uint32_t cs_base = c.seg[S_CS].base
    cdef bint ends, wrapped = False
    cdef Block* tail
    cdef bint xl = c.mon == MON_BT and c.vring0
    cdef int act = ACT_IDENT
    cdef size_t slot
    if c.eflags & FL_TF:
        max_insns = 1
    if c.nblocks + 1 >= BLOCK_ARENA or c.ninsns + MAX_BLOCK_INSNS + 4 > INSN_ARENA:
        cache_flush(c)
    if cache:
        b = &c.blocks[c.nblocks]
        insns = &c.insn_pool[c.ninsns]
    else:
        # the last block and record slots of the arenas are kept for this
        b = &c.blocks[BLOCK_ARENA - 1]
        insns = &c.insn_pool[INSN_ARENA - 2]
    while True:
        if xl and c.xlat_source == XS_ENGINE:
            act = classify_code(c, cs_base + cur)
            if not ACT_IDENT <= act < ACT_CALLOUT + N_CALLOUT_KINDS:
                act = ACT_TRAP          # never from the table; an unknown action must not run as is
        elif xl:
            gpa = 0xFFFFFFFFU
            act = xlat_action(c, cs_base + cur, &gpa)
            if act == ACT_NONE:
                if n == 0:
                    c.xlat_miss_gla = cs_base + cur
                    c.xlat_miss_gpa = gpa
                    return NULL
                break               # the next block starts with the unscanned instruction
        ends = decode_insn(c, cs_base, cur, &insns[n])
        if act >= ACT_CALLOUT:
            slot = &insns[n] - c.insn_pool
            c.callout_fn[slot] = insns[n].fn
            c.callout_kind[slot] = <uint8_t>(act - ACT_CALLOUT)
            insns[n].fn = h_CALLOUT
        elif act == ACT_TRAP and adapt_hot(c, cs_base + cur):
            slot = &insns[n] - c.insn_pool
            c.callout_fn[slot] = insns[n].fn
            insns[n].fn = h_ADAPTIVE
        # 16-bit code whose IP wrapped past 0xFFFF: the block ends there
        wrapped = not c.code32 and (insns[n].next_eip < cur or insns[n].next_eip == 0)
        cur = insns[n].next_eip
        n += 1
        if ends or n >= max_insns or wrapped:
            break
        if ((cs_base + cur) ^ (cs_base + eip)) & 0xFFFFF000U:
            break
        if c.until_active and cur == c.until_eip:
            break
    # every block ends in a record that leaves the inner loop
    # 2: decoded with EFLAGS.TF set (one instruction, then a single-step trap)
    b.mode_change = (insns[n - 1].flags & IF_MODE) | (2 if c.eflags & FL_TF else 0)
    insns[n].fn = h_BLOCK_END
    insns[n].next_eip = cur
    insns[n].len = 0
    b.eip = eip
    b.end_eip = cur
    b.cs_base = cs_base
    b.mode = mode_key(c)
    gpa = 0xFFFFFFFFU
    translate_quiet(c, cs_base + eip, &gpa)
    b.gpa = gpa
    b.page0 = gpa >> 12
    last_gla = cs_base + ((cur if cur else 0x10000) - 1 if wrapped else cur - 1)
    if translate_quiet(c, last_gla, &gpa) == 0:
        b.page1 = gpa >> 12
    else:
        b.page1 = b.page0
    b.ninsn = n
    b.valid = 1
    b.insns = insns
    b.succ[0] = NULL
    b.succ[1] = NULL
    b.succ_epoch = c.epoch
    b.hash_next = NULL
    b.jit_block = -1
    b.jit_heat = 0
    if wrapped:
        # the last instruction ran past IP 0xFFFF: its bytes continue at CS:0
        mark_code(c, cs_base + eip, cs_base + 0x10000)
        mark_code(c, cs_base, cs_base + cur)
    else:
        mark_code(c, cs_base + eip, cs_base + cur)
    c.n_blocks_decoded += 1
    add_slow_work(c, 64 * n)
    if cache:
        c.nblocks += 1
        c.ninsns += n + 1
        # a bucket holds at most MAX_CHAIN blocks: the oldest goes (it stays in the arena, dead)
        bucket = hash_eip(eip, cs_base)
        tail = c.htab[bucket]
        while tail != NULL:
            chain += 1
            if chain >= MAX_CHAIN and tail.hash_next != NULL:
                kill_block(c, tail.hash_next)
                c.n_chain_evictions += 1
                break
            tail = tail.hash_next
        add_slow_work(c, chain)
        b.hash_next = c.htab[bucket]
        c.htab[bucket] = b
    return b

cdef void set_until(Cpu* c, bint active, uint32_t eip) noexcept nogil:
    """Stop before executing eip; cached blocks running through it are dropped."""
    cdef uint32_t k
    cdef Block* b
    c.until_active = active
    c.until_eip = eip
    update_attention(c)
    if not active:
        return
    for k in range(c.nblocks):
        b = &c.blocks[k]
        if b.valid and b.eip < eip and eip < b.end_eip:
            kill_block(c, b)

cdef enum:
    ATT_GO = 0          # attend(): run the next block
    ATT_STEP = 1        # run one instruction (an interrupt waits behind an STI / MOV SS shadow)
    ATT_EXIT = 2        # leave run() (cpu.exit_reason set)
    ATT_DELIVER = 3     # deliver cpu.exc_vector first

cdef int attend(Cpu* c) noexcept nogil:
    """The rare conditions at a block boundary, in priority order (SDM Vol. 3 Table 6-2)."""
    if c.yield_now:
        c.yield_now = 0
        c.slow_work = 0
        update_attention(c)
        c.exit_reason = EXIT_BUDGET
        return ATT_EXIT
    if c.db_pending:
        # the single-step trap of an instruction that ended in an exit (I/O)
        c.db_pending = 0
        update_attention(c)
        single_step_trap(c)
        return ATT_DELIVER
    if c.until_active and c.eip == c.until_eip:
        c.exit_reason = EXIT_UNTIL
        return ATT_EXIT
    if c.intr_line and guest_if(c) and not c.int_shadow and not c.irq_pending:
        # INTR is up and interrupts can be taken here: the monitor acknowledges the
        # controller (INTA) and injects the vector it names (inject_interrupt)
        c.exit_reason = EXIT_INTR
        return ATT_EXIT
    if c.irq_pending and guest_if(c) and not c.int_shadow:
        # an external interrupt at this instruction boundary (SDM Vol. 3 §6.8.1)
        c.irq_pending = 0
        update_attention(c)
        c.n_irqs += 1
        c.exc_vector = c.irq_vector
        c.exc_has_err = 0
        c.exc_soft = 0
        return ATT_DELIVER
    # under an STI / MOV SS shadow with an interrupt waiting: one instruction
    cdef bint step_one = c.int_shadow and (c.irq_pending or c.intr_line) and guest_if(c)
    c.int_shadow = 0
    update_attention(c)
    return ATT_STEP if step_one else ATT_GO

cdef inline int mmio_stop(Cpu* c, Insn* i) noexcept nogil:
    """Leave run() before the instruction at i: an access of it to an MMIO region needs the device."""
    c.mmio_exit = 0
    c.eip = i.next_eip - i.len
    c.exit_reason = EXIT_MMIO
    return 1

cdef int end_of_block(Cpu* c, Insn* i, Block* blk, int rc, uint64_t* stop_at) noexcept nogil:
    """A block left early, at record i, with rc (not RC_NEXT or RC_BRANCH): a fault to deliver
    (or, under the monitor, a trap to emulate), an exit, or a restart. 1: leave run()."""
    if rc == RC_FAULT and c.mmio_exit:
        return mmio_stop(c, i)
    if rc == RC_FAULT:
        if c.exc_soft:
            # INT n, INT3, INTO: a trap, whose frame holds the next instruction; if the
            # delivery itself faults, that fault points back at the INT (exceptions.pxi)
            c.icount += 1
            c.exc_soft_start = i.next_eip - i.len
            c.eip = i.next_eip
        else:
            c.eip = i.next_eip - i.len
            if c.mon and c.exc_vector == EXC_GP and i.fn != h_CALLOUT and i.fn != h_ADAPTIVE:
                # the monitor: a #GP of the deprivileged guest; emulate at the virtual privilege
                rc = mon_trap(c, i)
                if rc == RC_FAULT and c.mmio_exit:
                    return mmio_stop(c, i)      # the emulated instruction reached an MMIO region
                if rc != RC_FAULT:
                    if rc == RC_EXIT_BEFORE:
                        return 1
                    if rc == RC_RESTART:
                        return end_of_block(c, i, blk, rc, stop_at)
                    c.icount += 1
                    if rc == RC_NEXT or rc == RC_EXIT:
                        c.eip = i.next_eip
                    if blk.mode_change & 2:
                        # TF: the single-step trap after the emulated instruction
                        if rc == RC_EXIT:
                            c.db_pending = 1
                            update_attention(c)
                            return 1
                        single_step_trap(c)
                        stop_at[0] -= 1 if stop_at[0] else 0
                        return deliver(c)
                    return rc == RC_EXIT
        stop_at[0] -= 1 if stop_at[0] else 0    # a delivery uses budget too: a guest faulting forever still ends
        return deliver(c)
    if rc == RC_EXIT:
        c.icount += 1
        c.eip = i.next_eip
        if blk.mode_change & 2:
            c.db_pending = 1        # delivered when run() resumes, before the next instruction
            update_attention(c)
        return 1
    if rc == RC_EXIT_BEFORE:
        c.eip = i.next_eip - i.len
        return 1
    # RC_RESTART: h_STALE set eip to the stale instruction, or a REP string instruction
    # stopped after REP_CHUNK elements; look it up again. It uses as much of the budget as
    # that many instructions would, so run() returns (for a timeout) within its slice.
    if stop_at[0] - c.icount > REP_CHUNK:
        stop_at[0] -= REP_CHUNK
    else:
        stop_at[0] = c.icount
    return 0

cdef int run_loop(Cpu* c, uint64_t budget) noexcept nogil:
    """Execute until an exit; returns cpu.exit_reason."""
    cdef uint64_t stop_at = c.icount + budget
    cdef Block* blk
    cdef Block* prev = NULL
    cdef Insn* i
    cdef int rc
    cdef uint64_t flushes
    cdef uint32_t gpa
    cdef bint step_one
    c.exit_reason = EXIT_NONE
    c.slow_work = 0
    while True:
        if c.icount >= stop_at:
            c.exit_reason = EXIT_BUDGET
            break
        step_one = False
        if c.attention and c.mmio_log_n:
            # an instruction an MMIO exit stopped: it runs again, alone, with the device's answers
            # (mmio_access), before any interrupt or other condition is looked at
            c.mmio_log_pos = 0
            step_one = True
            if c.int_shadow:
                c.int_shadow = 0    # the shadow covers this instruction, as it did on its first run
                update_attention(c)
        elif c.attention:
            # the rare conditions, tested together on the way into every block (attend)
            rc = attend(c)
            if rc == ATT_EXIT:
                break
            if rc == ATT_DELIVER:
                prev = NULL
                stop_at -= 1 if stop_at else 0       # a delivery uses budget too: a guest faulting forever still ends
                if deliver(c):
                    break
                continue
            step_one = rc == ATT_STEP
        blk = NULL
        if prev != NULL and prev.succ_epoch == c.epoch:
            if prev.succ[0] != NULL and prev.succ[0].eip == c.eip and prev.succ[0].valid:
                blk = prev.succ[0]
            elif prev.succ[1] != NULL and prev.succ[1].eip == c.eip and prev.succ[1].valid:
                blk = prev.succ[1]
            if blk != NULL:
                c.n_chain_hits += 1
        if blk == NULL:
            if code_gpa(c, c.seg[S_CS].base + c.eip, &gpa):
                # the instruction's page does not translate: #PF before it runs
                prev = NULL
                stop_at -= 1 if stop_at else 0
                if deliver(c):
                    break
                continue
            blk = lookup(c, c.eip, gpa)
            if blk == NULL:
                flushes = c.n_cache_flushes
                blk = decode_block(c, c.eip, MAX_BLOCK_INSNS, True)
                if flushes != c.n_cache_flushes:
                    prev = NULL
                if blk == NULL:
                    c.exit_reason = EXIT_TRANSLATE
                    break
            if prev != NULL and prev.valid:
                if prev.succ_epoch != c.epoch:
                    prev.succ[0] = NULL
                    prev.succ[1] = NULL
                    prev.succ_epoch = c.epoch
                if prev.succ[0] == NULL:
                    prev.succ[0] = blk
                else:
                    prev.succ[1] = blk
        if c.icount + blk.ninsn > stop_at or step_one:
            # the budget ends inside this block, or single-stepping: one instruction at a time
            flushes = c.n_cache_flushes
            blk = decode_block(c, c.eip, 1, False)
            if flushes != c.n_cache_flushes:
                prev = NULL
            if blk == NULL:
                c.exit_reason = EXIT_TRANSLATE
                break
        elif c.jit != NULL and (<JitState*>c.jit).handler_on and jit_mode_ok(c):
            if (<JitState*>c.jit).skip_once:
                (<JitState*>c.jit).skip_once = 0
                (<JitState*>c.jit).n_interp_handoffs += 1
            else:
                if blk.jit_block < 0 and blk.jit_heat < (<JitState*>c.jit).hot:
                    blk.jit_heat += 1
                    if blk.jit_heat == (<JitState*>c.jit).hot:
                        jit_translate_block(c, blk)
                if blk.jit_block >= 0 and jit_run(c, blk, stop_at):
                    prev = NULL
                    continue
        c.cur_block = blk
        i = blk.insns
        while True:
            rc = i.fn(c, i)
            if rc != RC_NEXT:
                break
            i += 1
        if step_one and c.mmio_log_n and not c.mmio_exit:
            mmio_retire(c)      # it retired, faulted or left: its answers are used up
        if rc == RC_BRANCH:
            c.icount += blk.ninsn
            if not blk.mode_change:
                prev = blk
                continue
            # after a possible mode change, the successor is found by a full lookup
            prev = NULL
            if c.mon:
                mon_resync(c)
            if blk.mode_change & 2:
                # TF was set when the instruction began: a single-step trap after it (SDM Vol. 3 §17.3.1.4)
                single_step_trap(c)
                prev = NULL
                stop_at -= 1 if stop_at else 0
                if deliver(c):
                    break
            continue
        prev = NULL
        c.icount += <uint64_t>(i - blk.insns)
        if end_of_block(c, i, blk, rc, &stop_at):
            break
    c.cur_block = NULL
    return c.exit_reason
