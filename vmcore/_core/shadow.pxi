# Shadow page tables (bt and trap modes; ARCHITECTURE.md "Monitor rules").
#
# The guest's page tables are virtual: the MMU never walks them on a TLB miss. It
# reads a shadow instead: per guest page directory (guest CR3), the composed
# translation gla -> gpa with the combined R/W, U/S of the PDE and PTE and the
# guest's dirty bit, filled lazily. A shadow miss is a hidden fault: the monitor
# walks the guest's tables (setting their accessed and dirty bits as the hardware
# would, SDM Vol. 3 §4.8) and fills the shadow entry; if the guest's tables say no,
# it is a true fault, reflected to the guest with its CR2 and error code.
#
# Coherence: every guest page that a shadow was built from (page directories and page
# tables) is traced. Its pages never get a TLB write entry, so each guest write to
# them reaches mem_slow, which applies it and drops the shadow entries it may change
# (shadow_trace_write). A traced page that no shadow uses any more is untraced at its
# next write. Shadows of the last NROOTS page directories are kept across CR3 loads.
# The TLB in front of the shadows is left alone by traced writes: as on the hardware,
# a translation the guest changed in memory may be used until its INVLPG or CR3 load
# (SDM Vol. 3 §4.10.4.3), and guests can observe which.
#
# Shadow entries hold gpas; every gpa still goes through mem_slow's RAM bounds, so a
# guest page table pointing outside guest RAM reaches nothing but the open bus.

from libc.stdlib cimport calloc, free
from libc.string cimport memset

cdef enum:
    NROOTS = 8
    SHADOW_FREE = 0xFFFFFFFFU
    SRC_NONE = 0xFFFFFFFFU      # pde_src: no shadow page table here
    SRC_BIG = 0xFFFFFFFEU       # pde_src: a 4 MiB page (its PDE is the source)
    SP_P = 0x1
    SP_RW = 0x2
    SP_US = 0x4
    SP_D = 0x40
    SP_G = 0x100

cdef void shadow_init_root(ShadowRoot* r) noexcept nogil:
    cdef int k
    r.guest_pd_page = SHADOW_FREE
    r.stamp = 0
    for k in range(1024):
        r.pde_src[k] = SRC_NONE
        r.spt[k] = NULL

cdef void trace_page(Cpu* c, uint32_t page) noexcept nogil:
    """Guest writes to page now reach mem_slow (and shadow_trace_write)."""
    if page < c.ram_pages and not c.traced[page]:
        c.traced[page] = 1
        tlb_drop_write(c, page)

cdef void shadow_drop_pde(Cpu* c, ShadowRoot* r, uint32_t pdi) noexcept nogil:
    cdef uint32_t src = r.pde_src[pdi]
    if r.spt[pdi] != NULL:
        memset(r.spt[pdi], 0, 1024 * sizeof(uint32_t))
    if src != SRC_NONE and src != SRC_BIG and src < c.ram_pages and c.pt_users[src]:
        c.pt_users[src] -= 1
    r.pde_src[pdi] = SRC_NONE

cdef void shadow_drop_root(Cpu* c, ShadowRoot* r) noexcept nogil:
    cdef uint32_t k
    if r.guest_pd_page == SHADOW_FREE:
        return
    for k in range(1024):
        shadow_drop_pde(c, r, k)
        if r.spt[k] != NULL:
            free(r.spt[k])
            r.spt[k] = NULL
    r.guest_pd_page = SHADOW_FREE
    c.n_shadows_dropped += 1

cdef void shadow_flush_all(Cpu* c) noexcept nogil:
    """Forget every shadow (CR4.PSE/PGE changed, or the host wrote a traced page)."""
    cdef int k
    if c.roots == NULL:
        return
    for k in range(NROOTS):
        shadow_drop_root(c, &c.roots[k])
    c.shadow_cur = NULL
    tlb_flush_all(c)

cdef ShadowRoot* shadow_root(Cpu* c) noexcept nogil:
    """The shadow of the current guest page directory: reused, or a new one in place of
    the least recently used."""
    cdef uint32_t pd_page = c.cr3 >> 12
    cdef ShadowRoot* r
    cdef ShadowRoot* victim = &c.roots[0]
    cdef int k
    c.shadow_clock += 1
    for k in range(NROOTS):
        r = &c.roots[k]
        if r.guest_pd_page == pd_page:
            r.stamp = c.shadow_clock
            c.n_shadows_reused += 1
            c.shadow_cur = r
            return r
        if r.guest_pd_page == SHADOW_FREE:
            if victim.guest_pd_page != SHADOW_FREE:
                victim = r
        elif victim.guest_pd_page != SHADOW_FREE and r.stamp < victim.stamp:
            victim = r
    shadow_drop_root(c, victim)
    victim.guest_pd_page = pd_page
    victim.stamp = c.shadow_clock
    trace_page(c, pd_page)
    c.n_shadows_created += 1
    c.shadow_cur = victim
    return victim

cdef int shadow_fill(Cpu* c, ShadowRoot* r, uint32_t gla) noexcept nogil:
    """Compose the guest's (just walked, valid) translation of gla into the shadow."""
    cdef uint32_t pdi = gla >> 22
    cdef uint32_t pde_gpa, pde, pte_gpa, pte
    cdef bint big = guest_entries(c, gla, &pde_gpa, &pde, &pte_gpa, &pte)
    cdef uint32_t src = SRC_BIG if big else pde >> 12
    cdef uint32_t bits = pde & pte & (PTE_RW | PTE_US)
    cdef uint32_t frame = guest_frame_gpa(gla, pte, big) & 0xFFFFF000U
    if r.pde_src[pdi] != src:
        shadow_drop_pde(c, r, pdi)
        if r.spt[pdi] == NULL:
            r.spt[pdi] = <uint32_t*>calloc(1024, sizeof(uint32_t))
            if r.spt[pdi] == NULL:
                return 1            # no host memory: the caller uses the walk without caching it
        r.pde_src[pdi] = src
        if src != SRC_BIG:
            trace_page(c, src)
            if src < c.ram_pages:
                c.pt_users[src] += 1
                if c.pt_users[src] == 1:
                    c.pt_rmap[src] = ((<uint32_t>(r - c.roots) << 10) | pdi) + 1
    r.spt[pdi][(gla >> 12) & 0x3FF] = (frame | SP_P | bits | (pte & PTE_D) |
                                      (SP_G if (pte & PTE_G) and (c.cr4 & CR4_PGE) else 0))
    c.n_shadow_fills += 1
    return 0

cdef int shadow_translate(Cpu* c, uint32_t gla, int is_write, uint32_t* gpa, uint32_t* writable,
                          uint32_t* is_global) noexcept nogil:
    """The MMU's miss path under the monitor: the shadow, else a hidden fault (walk the
    guest's tables, fill), or a true fault (#PF as page_walk raises it)."""
    cdef ShadowRoot* r = c.shadow_cur
    cdef uint32_t* t
    cdef uint32_t s
    cdef bint user = c.cpl == 3 and not c.sys_access
    cdef bint rw_ok
    if r == NULL:
        r = shadow_root(c)
    t = r.spt[gla >> 22]
    if t != NULL and r.pde_src[gla >> 22] != SRC_NONE:
        s = t[(gla >> 12) & 0x3FF]
        if s & SP_P:
            rw_ok = (s & SP_RW) != 0 or (not user and not (c.cr0 & CR0_WP))
            if (not user or (s & SP_US)) and (not is_write or (rw_ok and (s & SP_D))):
                gpa[0] = (s & 0xFFFFF000U) | (gla & 0xFFF)
                writable[0] = 1 if (s & SP_D) and rw_ok else 0
                is_global[0] = 1 if s & SP_G else 0
                return 0
    # a miss, a write to a clean page, or a right the entry does not give: ask the guest's tables
    if page_walk(c, gla, is_write, gpa, writable, is_global):
        return RC_FAULT
    c.n_hidden_faults += 1
    shadow_fill(c, r, gla)
    return 0

cdef void shadow_invlpg(Cpu* c, uint32_t gla) noexcept nogil:
    """INVLPG: the current shadow forgets gla (SDM Vol. 3 §4.10.4.1)."""
    cdef ShadowRoot* r = c.shadow_cur
    if r != NULL and r.spt[gla >> 22] != NULL:
        r.spt[gla >> 22][(gla >> 12) & 0x3FF] = 0

cdef void shadow_trace_write(Cpu* c, uint32_t gpa, uint32_t size) noexcept nogil:
    """A write to a traced guest page (already applied): drop the shadow entries built
    from the guest entries it touched; untrace the page if no shadow uses it."""
    cdef uint32_t page = gpa >> 12
    cdef uint32_t first = (gpa & 0xFFF) >> 2
    cdef uint32_t last = ((gpa & 0xFFF) + size - 1) >> 2
    cdef uint32_t k, pdi, idx
    cdef ShadowRoot* r
    cdef bint used = False
    if last > 1023:
        last = 1023
    c.n_traced_writes += 1
    for k in range(NROOTS):
        # a page directory of a shadow: drop the shadow page tables of the PDEs written
        r = &c.roots[k]
        if r.guest_pd_page == page:
            used = True
            for idx in range(first, last + 1):
                if r.pde_src[idx] != SRC_NONE:
                    shadow_drop_pde(c, r, idx)
    if c.pt_users[page]:
        # a page table of a shadow: drop the entries built from the PTEs written; the one
        # PDE that uses it is found through pt_rmap, several by a search
        if c.pt_users[page] == 1 and c.pt_rmap[page]:
            k = (c.pt_rmap[page] - 1) >> 10
            pdi = (c.pt_rmap[page] - 1) & 0x3FF
            r = &c.roots[k]
            if r.guest_pd_page != SHADOW_FREE and r.pde_src[pdi] == page:
                for idx in range(first, last + 1):
                    r.spt[pdi][idx] = 0
                return
        for k in range(NROOTS):
            r = &c.roots[k]
            if r.guest_pd_page == SHADOW_FREE:
                continue
            for pdi in range(1024):
                if r.pde_src[pdi] == page:
                    used = True
                    c.pt_rmap[page] = ((k << 10) | pdi) + 1
                    for idx in range(first, last + 1):
                        r.spt[pdi][idx] = 0
    if not used:
        c.traced[page] = 0
