# Guest memory: RAM as one host buffer, a software TLB from gla pages to host
# pointers, and the slow path (misses, page-crossing, unmapped gpa, code pages).
#
# A TLB hit is a tag compare and a pointer add. Pages holding decoded code never
# get a write entry, so every write to them reaches mem_slow(), which invalidates
# the stale blocks (self-modifying code).

cdef enum:
    CR0_PE = 0x1
    CR0_MP = 0x2
    CR0_EM = 0x4
    CR0_TS = 0x8
    CR0_ET = 0x10
    CR0_NE = 0x20
    CR0_WP = 0x10000
    CR0_AM = 0x40000
    CR0_NW = 0x20000000
    CR0_CD = 0x40000000
    CR0_PG = 0x80000000U
    CR4_TSD = 0x4
    CR4_DE = 0x8
    CR4_PSE = 0x10
    CR4_PGE = 0x80
    CR4_PCE = 0x100
    CR4_OSFXSR = 0x200
    PTE_P = 0x1
    PTE_RW = 0x2
    PTE_US = 0x4
    PTE_A = 0x20
    PTE_D = 0x40
    PTE_PS = 0x80
    PTE_G = 0x100
    PF_P = 0x1
    PF_W = 0x2
    PF_U = 0x4
    # the i440FX's programmable attribute map (82441FX datasheet 290549, PAM0-PAM6 at 59h-5Fh):
    # 0xC0000-0xFFFFF, decided per 4 KiB page here (the chipset's granule is 16 KiB, 64 KiB at F0000)
    PAM_GPA = 0xC0000
    PAM_SIZE = 0x40000
    PAM_PAGES = 64
    PAM_READ_RAM = 1          # RE: reads go to DRAM, else to the PCI side (the ROM's low window)
    PAM_WRITE_RAM = 2         # WE: writes go to DRAM, else to the PCI side (discarded)
    PAM_RAM = 3

cdef void tlb_flush_all(Cpu* c) noexcept nogil:
    cdef int k, t
    for t in range(2):
        for k in range(TLB_SIZE):
            c.tlbs[t][k].tag_r = 1
            c.tlbs[t][k].tag_w = 1
            c.tlbs[t][k].gpa_page = 0xFFFFFFFFU
    c.n_tlb_flushes += 1
    c.epoch += 1
    if c.jit != NULL:
        jit_tlb_flush(c)        # the JIT's paged views are a second TLB

cdef void tlb_flush_nonglobal(Cpu* c) noexcept nogil:
    """A CR3 load: every translation but those of global pages (SDM Vol. 3 §4.10.4.1)."""
    cdef int k, t
    if not (c.cr4 & CR4_PGE):
        tlb_flush_all(c)
        return
    for t in range(2):
        for k in range(TLB_SIZE):
            if not c.tlbs[t][k].is_global:
                c.tlbs[t][k].tag_r = 1
                c.tlbs[t][k].tag_w = 1
                c.tlbs[t][k].gpa_page = 0xFFFFFFFFU
    c.n_tlb_flushes += 1
    c.epoch += 1
    if c.jit != NULL:
        jit_tlb_flush(c)

cdef void tlb_flush_page(Cpu* c, uint32_t gla) noexcept nogil:
    """INVLPG: the translation of one page, global or not."""
    cdef int t
    cdef TlbEntry* e
    for t in range(2):
        e = &c.tlbs[t][(gla >> 12) & (TLB_SIZE - 1)]
        if e.tag_r == (gla & 0xFFFFF000U) or e.tag_w == (gla & 0xFFFFF000U):
            e.tag_r = 1
            e.tag_w = 1
            e.gpa_page = 0xFFFFFFFFU
    c.epoch += 1
    if c.jit != NULL:
        jit_tlb_flush_page(c, gla)

cdef inline void tlb_select(Cpu* c) noexcept nogil:
    """Point the fast path at the TLB of the current privilege level."""
    c.tlb = &c.tlbs[1 if c.cpl == 3 else 0][0]

cdef inline void tlb_drop_write(Cpu* c, uint32_t gpa_page) noexcept nogil:
    """No more fast writes to gpa_page (it now holds decoded code)."""
    cdef int k, t
    for t in range(2):
        for k in range(TLB_SIZE):
            if c.tlbs[t][k].gpa_page == gpa_page:
                c.tlbs[t][k].tag_w = 1
    if c.jit != NULL:
        jit_drop_write(c, gpa_page)

cdef inline uint32_t phys_rd32(Cpu* c, uint32_t gpa) noexcept nogil:
    cdef uint32_t v = 0xFFFFFFFFU
    if gpa <= c.ram_size - 4:
        memcpy(&v, c.ram + gpa, 4)
    return v

cdef void phys_wr32(Cpu* c, uint32_t gpa, uint32_t v) noexcept nogil:
    """A write by the processor itself (accessed and dirty bits)."""
    if gpa > c.ram_size - 4:
        return
    if c.code_map[gpa >> 12] & chunk_bits(gpa & 0xFFF, 4):
        invalidate_code(c, gpa >> 12)
    memcpy(c.ram + gpa, &v, 4)

cdef int page_fault(Cpu* c, uint32_t gla, uint32_t err) noexcept nogil:
    c.cr2 = gla
    c.exc_vector = EXC_PF
    c.exc_has_err = 1
    c.exc_err = err
    c.n_page_faults += 1
    return RC_FAULT

cdef inline bint guest_entries(Cpu* c, uint32_t gla, uint32_t* pde_gpa, uint32_t* pde, uint32_t* pte_gpa,
                               uint32_t* pte) noexcept nogil:
    """The guest's PDE and PTE for gla, read without side effects; True for a 4 MiB page
    (CR4.PSE and PDE.PS), whose PTE is the PDE itself. pte = 0 if the PDE is not present."""
    pde_gpa[0] = (c.cr3 & 0xFFFFF000U) | ((gla >> 20) & 0xFFC)
    pde[0] = phys_rd32(c, pde_gpa[0])
    if (c.cr4 & CR4_PSE) and (pde[0] & PTE_PS):
        pte_gpa[0] = pde_gpa[0]
        pte[0] = pde[0]
        return True
    pte_gpa[0] = (pde[0] & 0xFFFFF000U) | ((gla >> 10) & 0xFFC)
    pte[0] = phys_rd32(c, pte_gpa[0]) if pde[0] & PTE_P else 0
    return False

cdef inline uint32_t guest_frame_gpa(uint32_t gla, uint32_t pte, bint big) noexcept nogil:
    """Where gla lands through its (present) PTE: a 4 KiB or a 4 MiB frame."""
    if big:
        return (pte & 0xFFC00000U) | (gla & 0x3FFFFF)
    return (pte & 0xFFFFF000U) | (gla & 0xFFF)

cdef int page_walk(Cpu* c, uint32_t gla, int is_write, uint32_t* gpa, uint32_t* writable,
                   uint32_t* is_global) noexcept nogil:
    """32-bit paging with 4 KiB and (CR4.PSE) 4 MiB pages: permissions, accessed and
    dirty bits, #PF with CR2 and the error code (SDM Vol. 3 §4.3, §4.6, §4.7, §4.8)."""
    cdef bint user = c.cpl == 3 and not c.sys_access
    cdef uint32_t err = (PF_W if is_write else 0) | (PF_U if user else 0)
    cdef uint32_t pde_gpa, pde, pte_gpa, pte, rw, us
    cdef bint big = guest_entries(c, gla, &pde_gpa, &pde, &pte_gpa, &pte)
    c.n_page_walks += 1
    if not (pde & PTE_P) or not (pte & PTE_P):
        return page_fault(c, gla, err)
    rw = pde & pte & PTE_RW
    us = pde & pte & PTE_US
    if user:
        if not us or (is_write and not rw):
            return page_fault(c, gla, err | PF_P)
    elif is_write and not rw and (c.cr0 & CR0_WP):
        return page_fault(c, gla, err | PF_P)
    # accessed bits on the way down, dirty on a write (SDM Vol. 3 §4.8)
    if not big and not (pde & PTE_A):
        phys_wr32(c, pde_gpa, pde | PTE_A)
    if not (pte & PTE_A) or (is_write and not (pte & PTE_D)):
        pte |= PTE_A | (PTE_D if is_write else 0)
        phys_wr32(c, pte_gpa, pte)
    gpa[0] = guest_frame_gpa(gla, pte, big)
    # a fast write needs the dirty bit already set and the right to write at this privilege
    writable[0] = 1 if (pte & PTE_D) and (rw or (not user and not (c.cr0 & CR0_WP))) else 0
    is_global[0] = 1 if (pte & PTE_G) and (c.cr4 & CR4_PGE) else 0
    return 0

cdef inline int translate_full(Cpu* c, uint32_t gla, int is_write, uint32_t* gpa, uint32_t* writable,
                               uint32_t* is_global) noexcept nogil:
    if c.cr0 & CR0_PG:
        if c.mon:
            if shadow_translate(c, gla, is_write, gpa, writable, is_global):
                return RC_FAULT
        elif page_walk(c, gla, is_write, gpa, writable, is_global):
            return RC_FAULT
        gpa[0] &= c.a20_mask
        return 0
    gpa[0] = gla & c.a20_mask
    writable[0] = 1
    is_global[0] = 0
    return 0

cdef inline int translate(Cpu* c, uint32_t gla, uint32_t* gpa) noexcept nogil:
    """gla -> gpa for a read (instruction fetch, code tracking)."""
    cdef uint32_t w, g
    return translate_full(c, gla, 0, gpa, &w, &g)

cdef inline uint64_t chunk_bits(uint32_t off, uint32_t size) noexcept nogil:
    """code_map bits covering page offsets [off, off + size)."""
    cdef uint32_t first = off >> 6
    cdef uint32_t last = (off + size - 1) >> 6
    cdef uint64_t lo = (<uint64_t>1) << first
    if last >= 63:
        return ~(lo - 1)
    return ((<uint64_t>1) << (last + 1)) - lo


cdef int probe_write(Cpu* c, uint32_t gla, uint32_t size) noexcept nogil:
    """The page checks of a write of size bytes at gla, on each page it touches, without the
    write: RC_FAULT with the #PF a store there would raise."""
    cdef uint32_t gpa, writable, is_global
    if translate_full(c, gla, 1, &gpa, &writable, &is_global):
        return RC_FAULT
    if (gla & 0xFFF) + size > 0x1000 and translate_full(c, (gla | 0xFFF) + 1, 1, &gpa, &writable, &is_global):
        return RC_FAULT
    return 0

cdef int mem_slow(Cpu* c, uint32_t gla, uint32_t size, int is_write, uint32_t* val) noexcept nogil:
    """Any access the TLB did not satisfy. val: value to write or where to read into."""
    cdef uint32_t gpa, k, v, off, page
    cdef uint32_t writable, is_global
    cdef TlbEntry* e
    cdef uint8_t* hva
    if (gla & 0xFFF) + size > 0x1000:
        # page-crossing access: byte by byte, little endian
        if is_write:
            # a store that faults writes nothing: both pages are checked before the first byte
            if probe_write(c, gla, size):
                return RC_FAULT
            v = val[0]
            for k in range(size):
                if mem_slow(c, gla + k, 1, 1, &v):
                    return RC_FAULT
                v >>= 8
        else:
            v = 0
            for k in range(size):
                if mem_slow(c, gla + k, 1, 0, &off):
                    return RC_FAULT
                v |= (off & 0xFF) << (8 * k)
            val[0] = v
        return 0
    if translate_full(c, gla, is_write, &gpa, &writable, &is_global):
        return RC_FAULT
    c.n_tlb_misses += 1
    if c.mmio_n and mmio_region(c, gpa) >= 0:
        return mmio_access(c, gpa, size, is_write, val)     # never cached in the TLB
    if <uint32_t>(gpa - PAM_GPA) < PAM_SIZE:
        if c.pam[(gpa - PAM_GPA) >> 12] != PAM_RAM:
            return pam_access(c, gla, gpa, size, is_write, val, is_global)
    elif c.rom_size and gpa >= <uint32_t>(0 - c.rom_size):
        return rom_access(c, gla, gpa, size, is_write, val)
    if gpa >= c.ram_size or c.ram_size - gpa < size:
        # nothing there: reads float high, writes vanish (open bus)
        if is_write:
            c.n_unmapped_writes += 1
        else:
            c.n_unmapped_reads += 1
            val[0] = 0xFFFFFFFFU >> (32 - 8 * size)
        return 0
    page = gpa >> 12
    off = gpa & 0xFFF
    e = tlb_fill_ram(c, gla, page, is_global)
    hva = c.ram + gpa
    if is_write:
        if c.code_map[page]:
            if c.code_map[page] & chunk_bits(off, size):
                invalidate_code(c, page)
        if c.code_map[page] == 0 and writable and not c.traced[page]:
            e.tag_w = gla & 0xFFFFF000U
        ram_store(c, gpa, size, val[0])
    else:
        v = 0
        memcpy(&v, hva, size)
        val[0] = v
    return 0

cdef inline void ram_store(Cpu* c, uint32_t gpa, uint32_t size, uint32_t v) noexcept nogil:
    """Store size bytes at gpa (in RAM, within one page) once the code map has been served."""
    cdef uint8_t* hva = c.ram + gpa
    if size == 1:
        hva[0] = <uint8_t>v
    elif size == 2:
        memcpy(hva, &v, 2)
    else:
        memcpy(hva, &v, 4)
    if c.traced[gpa >> 12]:
        shadow_trace_write(c, gpa, size)     # a guest page-table write (shadow.pxi)

cdef inline uint32_t rom_low_offset(Cpu* c, uint32_t gpa) noexcept nogil:
    """The ROM byte behind gpa in the low window [rom_low_gpa, 1 MiB): its last 128 KiB."""
    return c.rom_size - (0x100000 - gpa)

cdef inline int pam_nothing(Cpu* c, uint32_t size, int is_write, uint32_t* val) noexcept nogil:
    """The PCI side with nobody there (no option ROM): reads float high, writes vanish."""
    if is_write:
        c.n_unmapped_writes += 1
    else:
        c.n_unmapped_reads += 1
        val[0] = 0xFFFFFFFFU >> (32 - 8 * size)
    return 0

cdef int pam_access(Cpu* c, uint32_t gla, uint32_t gpa, uint32_t size, int is_write, uint32_t* val,
                    uint32_t is_global) noexcept nogil:
    """An access to 0xC0000-0xFFFFF on a page whose PAM bits are not both set: the access that
    goes to DRAM does, the other goes to the PCI side, where the ROM's low window answers reads
    (writes to it vanish) and, below it, nothing does (reads float high). The TLB caches only
    what the PAM state cannot contradict: a page whose reads go to one place and whose writes
    do not go there too keeps writes on this path; a page that reads the ROM but writes RAM is
    not cached at all."""
    cdef uint32_t p = c.pam[(gpa - PAM_GPA) >> 12]
    cdef uint32_t page = gpa >> 12
    cdef uint32_t v = 0
    cdef bint rom_here = c.rom_size != 0 and gpa >= c.rom_low_gpa
    if gpa >= c.ram_size:
        p = 0                   # less than 1 MiB of RAM: no DRAM behind this page
        if not rom_here:
            return pam_nothing(c, size, is_write, val)
    if is_write:
        if p & PAM_WRITE_RAM:
            if c.code_map[page] & chunk_bits(gpa & 0xFFF, size):
                invalidate_code(c, page)
            ram_store(c, gpa, size, val[0])
        elif rom_here:
            c.n_rom_writes += 1
        else:
            return pam_nothing(c, size, is_write, val)
        return 0
    if p & PAM_READ_RAM:
        tlb_fill_ram(c, gla, page, is_global).tag_w = 1        # reads only
        memcpy(&v, c.ram + gpa, size)
    elif not rom_here:
        return pam_nothing(c, size, is_write, val)
    elif p == 0:
        return rom_access(c, gla, gpa, size, 0, val)
    else:
        memcpy(&v, c.rom + rom_low_offset(c, gpa), size)
    val[0] = v
    return 0

cdef inline TlbEntry* tlb_fill_ram(Cpu* c, uint32_t gla, uint32_t page, uint32_t is_global) noexcept nogil:
    """Cache gla's page -> RAM page `page` for reads; writes stay on the slow path until the caller
    sets tag_w (a write that may go fast: not code, not traced, writable)."""
    cdef TlbEntry* e = tlb_for_fill(c, gla)
    if e.gpa_page != page or e.tag_r != (gla & 0xFFFFF000U):
        e.tag_w = 1
    e.tag_r = gla & 0xFFFFF000U
    e.gpa_page = page
    e.is_global = is_global
    e.addend = <uintptr_t>(c.ram + (page << 12)) - <uintptr_t>(gla & 0xFFFFF000U)
    return e

cdef inline TlbEntry* tlb_for_fill(Cpu* c, uint32_t gla) noexcept nogil:
    """The entry a translation is cached in: an implicit supervisor access (descriptor
    tables, TSS, the frame of an inner-ring interrupt) made while CPL = 3 goes to the
    supervisor TLB, so that ring 3 never inherits its rights."""
    if c.sys_access:
        return &c.tlbs[0][(gla >> 12) & (TLB_SIZE - 1)]
    return &c.tlb[(gla >> 12) & (TLB_SIZE - 1)]

cdef int rom_access(Cpu* c, uint32_t gla, uint32_t gpa, uint32_t size, int is_write, uint32_t* val) noexcept nogil:
    """The BIOS ROM: at the top of the 4 GiB space and, below 1 MiB, its last 128 KiB
    (or all of it if smaller), as a PC maps it (the low window where PAM sends both reads and
    writes to the PCI side). Writes are ignored; reads hit the TLB."""
    cdef uint32_t off
    cdef TlbEntry* e
    if gpa >= <uint32_t>(0 - c.rom_size):
        off = gpa - <uint32_t>(0 - c.rom_size)
    else:
        off = rom_low_offset(c, gpa)
    if is_write:
        c.n_rom_writes += 1
        return 0
    e = tlb_for_fill(c, gla)
    e.tag_r = gla & 0xFFFFF000U
    e.tag_w = 1
    e.gpa_page = 0xFFFFFFFEU     # a ROM page: its bytes are not in RAM (code_gpa)
    e.is_global = 0
    e.addend = <uintptr_t>(c.rom + (off & 0xFFFFF000U)) - <uintptr_t>(gla & 0xFFFFF000U)
    val[0] = 0
    memcpy(val, c.rom + off, size)
    return 0

# Fast paths. Each returns 0, or RC_FAULT with the exception recorded in the Cpu.

cdef inline int rd8(Cpu* c, uint32_t gla, uint32_t* out) noexcept nogil:
    cdef TlbEntry* e = &c.tlb[(gla >> 12) & (TLB_SIZE - 1)]
    if e.tag_r == (gla & 0xFFFFF000U):
        c.n_tlb_hits += 1
        out[0] = (<uint8_t*>(<uintptr_t>gla + e.addend))[0]
        return 0
    return mem_slow(c, gla, 1, 0, out)

cdef inline int rd16(Cpu* c, uint32_t gla, uint32_t* out) noexcept nogil:
    cdef TlbEntry* e = &c.tlb[(gla >> 12) & (TLB_SIZE - 1)]
    cdef uint16_t v
    if e.tag_r == (gla & 0xFFFFF000U) and (gla & 0xFFF) <= 0xFFE:
        c.n_tlb_hits += 1
        memcpy(&v, <void*>(<uintptr_t>gla + e.addend), 2)
        out[0] = v
        return 0
    return mem_slow(c, gla, 2, 0, out)

cdef inline int rd32(Cpu* c, uint32_t gla, uint32_t* out) noexcept nogil:
    cdef TlbEntry* e = &c.tlb[(gla >> 12) & (TLB_SIZE - 1)]
    if e.tag_r == (gla & 0xFFFFF000U) and (gla & 0xFFF) <= 0xFFC:
        c.n_tlb_hits += 1
        memcpy(out, <void*>(<uintptr_t>gla + e.addend), 4)
        return 0
    return mem_slow(c, gla, 4, 0, out)

cdef inline int wr8(Cpu* c, uint32_t gla, uint32_t v) noexcept nogil:
    cdef TlbEntry* e = &c.tlb[(gla >> 12) & (TLB_SIZE - 1)]
    if e.tag_w == (gla & 0xFFFFF000U):
        c.n_tlb_hits += 1
        (<uint8_t*>(<uintptr_t>gla + e.addend))[0] = <uint8_t>v
        return 0
    return mem_slow(c, gla, 1, 1, &v)

cdef inline int wr16(Cpu* c, uint32_t gla, uint32_t v) noexcept nogil:
    cdef TlbEntry* e = &c.tlb[(gla >> 12) & (TLB_SIZE - 1)]
    cdef uint16_t w
    if e.tag_w == (gla & 0xFFFFF000U) and (gla & 0xFFF) <= 0xFFE:
        c.n_tlb_hits += 1
        w = <uint16_t>v
        memcpy(<void*>(<uintptr_t>gla + e.addend), &w, 2)
        return 0
    return mem_slow(c, gla, 2, 1, &v)

cdef inline int wr32(Cpu* c, uint32_t gla, uint32_t v) noexcept nogil:
    cdef TlbEntry* e = &c.tlb[(gla >> 12) & (TLB_SIZE - 1)]
    if e.tag_w == (gla & 0xFFFFF000U) and (gla & 0xFFF) <= 0xFFC:
        c.n_tlb_hits += 1
        memcpy(<void*>(<uintptr_t>gla + e.addend), &v, 4)
        return 0
    return mem_slow(c, gla, 4, 1, &v)

cdef inline int rd_sz(Cpu* c, uint32_t gla, int sz, uint32_t* out) noexcept nogil:
    if sz == 0:
        return rd8(c, gla, out)
    if sz == 1:
        return rd16(c, gla, out)
    return rd32(c, gla, out)

cdef inline int wr_sz(Cpu* c, uint32_t gla, int sz, uint32_t v) noexcept nogil:
    if sz == 0:
        return wr8(c, gla, v)
    if sz == 1:
        return wr16(c, gla, v)
    return wr32(c, gla, v)

cdef int translate_quiet(Cpu* c, uint32_t gla, uint32_t* gpa) noexcept nogil:
    """translate() for the engine's own bookkeeping (decoding, code tracking): a page that does
    not translate leaves no trace (CR2, fault counters), since no #PF is raised for it here."""
    cdef uint32_t w, g
    cdef uint32_t saved_cr2 = c.cr2
    cdef uint64_t saved_faults = c.n_page_faults
    if translate_full(c, gla, 0, gpa, &w, &g):
        c.cr2 = saved_cr2
        c.n_page_faults = saved_faults
        return RC_FAULT
    return 0

cdef int fetch8(Cpu* c, uint32_t gla) noexcept nogil:
    """One code byte for the decoder; all ones where there is no RAM; -1 if the
    page does not translate (the fault is raised when the instruction runs)."""
    cdef uint32_t gpa
    if translate_quiet(c, gla, &gpa):
        return -1
    return phys_code_byte(c, gpa)

cdef inline uint8_t* phys_target(Cpu* c, uint32_t gpa, bint is_write) noexcept nogil:
    """Where the processor's read or write of the byte at gpa goes, as mem_slow routes it: RAM,
    the BIOS ROM in its two windows (reads), or NULL for nothing (reads float high, writes
    vanish). 0xC0000-0xFFFFF goes where PAM sends that kind of access (pam_access)."""
    cdef uint32_t p
    if <uint32_t>(gpa - PAM_GPA) < PAM_SIZE:
        p = c.pam[(gpa - PAM_GPA) >> 12]
        if p & (PAM_WRITE_RAM if is_write else PAM_READ_RAM):
            return c.ram + gpa if gpa < c.ram_size else NULL
        if is_write or not (c.rom_size and gpa >= c.rom_low_gpa):
            return NULL
        return c.rom + rom_low_offset(c, gpa)
    if c.rom_size and gpa >= <uint32_t>(0 - c.rom_size):
        return NULL if is_write else c.rom + (gpa - <uint32_t>(0 - c.rom_size))
    if gpa >= c.ram_size:
        return NULL
    return c.ram + gpa

cdef inline int phys_code_byte(Cpu* c, uint32_t gpa) noexcept nogil:
    """The byte an instruction fetch reads at gpa: the BIOS ROM in its two windows, RAM, or
    all ones where there is nothing (the scanner reads code through this too)."""
    cdef uint8_t* hva = phys_target(c, gpa, False)
    return hva[0] if hva != NULL else 0xFF

# Implicit supervisor accesses (SDM Vol. 3 §4.6): descriptor tables, the TSS, the IDT. They
# are checked as CPL 0 accesses whatever the CPL, and never cached in the ring-3 TLB.

cdef inline int sys_rd16(Cpu* c, uint32_t gla, uint32_t* v) noexcept nogil:
    cdef int rc
    c.sys_access += 1
    rc = rd16(c, gla, v)
    c.sys_access -= 1
    return rc

cdef inline int sys_rd32(Cpu* c, uint32_t gla, uint32_t* v) noexcept nogil:
    cdef int rc
    c.sys_access += 1
    rc = rd32(c, gla, v)
    c.sys_access -= 1
    return rc

cdef inline int sys_wr32(Cpu* c, uint32_t gla, uint32_t v) noexcept nogil:
    cdef int rc
    c.sys_access += 1
    rc = wr32(c, gla, v)
    c.sys_access -= 1
    return rc

# Memory-mapped I/O. A region is a range of whole gpa pages outside RAM and the ROM (at most
# MMIO_REGIONS of them) whose device lives in Python: an access there is an exit (EXIT_MMIO) taken
# *before* the instruction retires, as a #PF would be, so the instruction is re-executed once the
# device answered; on that run each of its MMIO accesses takes, in order, the logged answer (a read
# its value, a write nothing: it happened already) and the first access past the log is the next
# exit. A read-modify-write (ADD [mmio], EAX) so exits twice, for the read and then for the write;
# a REP string instruction forgets the log after each element. No MMIO page is ever in the software
# TLB or the JIT's window (both map RAM only), so every access comes here through mem_slow().
# An access that crosses a page is split into bytes by mem_slow(); regions are page granular, so
# an access within a page is all in one region or all outside. Accesses that cannot be exits read
# as open bus (all ones) and writes vanish, counted in n_mmio_open_bus: implicit supervisor
# accesses (descriptor tables, IDT, TSS), those of an exception or interrupt delivery, and host-
# side accesses outside run().
# A device may publish registers that read the same until it says otherwise (a local APIC's ID,
# which xv6 reads on every spinlock operation): the engine answers reads of them without an exit,
# from any context, until the device withdraws them (Engine.mmio_constant). A WRMSR to
# IA32_APIC_BASE withdraws them all: the APIC may read as open bus now (ops_sysarch.pxi).

cdef enum:
    MMIO_REGIONS = 8
    MMIO_LOG = 4        # MMIO accesses one instruction (one string element) may make
    MMIO_CONSTS = 8

cdef inline int mmio_region(Cpu* c, uint32_t gpa) noexcept nogil:
    """The index of the region holding gpa, or -1."""
    cdef uint32_t k
    for k in range(c.mmio_n):
        if c.mmio_first[k] <= gpa <= c.mmio_last[k]:
            return <int>k
    return -1

cdef int mmio_access(Cpu* c, uint32_t gpa, uint32_t size, int is_write, uint32_t* val) noexcept nogil:
    """An access to an MMIO region: the logged answer, or an exit (RC_FAULT with mmio_exit set)."""
    cdef uint32_t k = c.mmio_log_pos, j
    if not is_write and (gpa & 3) + size <= 4:
        for j in range(c.mmio_const_n):
            if c.mmio_const_gpa[j] == (gpa & ~<uint32_t>3):
                c.n_mmio_const_reads += 1
                val[0] = (c.mmio_const_value[j] >> (8 * (gpa & 3))) & (0xFFFFFFFFU >> (32 - 8 * size))
                return 0
    if c.sys_access or c.mmio_blocked or c.cur_block == NULL:
        c.n_mmio_open_bus += 1
        if not is_write:
            val[0] = 0xFFFFFFFFU >> (32 - 8 * size)
        return 0
    if k < c.mmio_log_n:
        if (c.mmio_log_gpa[k] == gpa and c.mmio_log_size[k] == size and c.mmio_log_write[k] == <uint32_t>is_write
                and (k + 1 < c.mmio_log_n or c.mmio_log_ready)):
            c.mmio_log_pos = k + 1
            if not is_write:
                val[0] = c.mmio_log_value[k]
            return 0
        if k + 1 == c.mmio_log_n and not c.mmio_log_ready and c.mmio_log_gpa[k] == gpa \
                and c.mmio_log_size[k] == size and c.mmio_log_write[k] == <uint32_t>is_write:
            c.mmio_exit = 1         # resumed before the device answered: the same exit again
            c.exc_vector = -1
            return RC_FAULT
        c.mmio_log_n = k            # the instruction went another way this time: forget the rest
        update_attention(c)
    if k >= MMIO_LOG:
        c.n_mmio_open_bus += 1      # more MMIO accesses than one instruction makes
        if not is_write:
            val[0] = 0xFFFFFFFFU >> (32 - 8 * size)
        return 0
    c.mmio_log_gpa[k] = gpa
    c.mmio_log_size[k] = size
    c.mmio_log_write[k] = <uint32_t>is_write
    c.mmio_log_value[k] = val[0] & (0xFFFFFFFFU >> (32 - 8 * size)) if is_write else 0
    c.mmio_log_n = k + 1
    c.mmio_log_ready = 0
    c.mmio_exit = 1
    update_attention(c)             # run() looks at the log on its way into the next block
    c.exc_vector = -1               # not an exception: end_of_block() turns it into EXIT_MMIO
    if is_write:
        c.n_mmio_writes += 1
    else:
        c.n_mmio_reads += 1
    return RC_FAULT

cdef inline void mmio_retire(Cpu* c) noexcept nogil:
    """The instruction (or string element) the log belongs to is done."""
    c.mmio_log_n = 0
    c.mmio_log_pos = 0
    c.mmio_log_ready = 0
    update_attention(c)
