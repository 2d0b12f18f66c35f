# Guest memory: RAM as one host buffer, a software TLB from gla pages to host
# pointers, and the slow path (misses, page-crossing, unmapped gpa, code pages).
#
# A TLB hit is a tag compare and a pointer add. Pages holding decoded code never
# get a write entry, so every write to them reaches mem_slow(), which invalidates
# the stale blocks (self-modifying code).

cdef inline void tlb_flush_all(Cpu* c) noexcept nogil:
    cdef int k
    for k in range(TLB_SIZE):
        c.tlb[k].tag_r = 1
        c.tlb[k].tag_w = 1
    c.n_tlb_flushes += 1

cdef inline void tlb_drop_write(Cpu* c, uint32_t gpa_page) noexcept nogil:
    """No more fast writes to gpa_page (it now holds decoded code)."""
    cdef int k
    for k in range(TLB_SIZE):
        if c.tlb[k].gpa_page == gpa_page:
            c.tlb[k].tag_w = 1

cdef inline int translate(Cpu* c, uint32_t gla, uint32_t* gpa) noexcept nogil:
    """gla -> gpa. Paging off: identity (SDM Vol. 3 §4.1.1)."""
    gpa[0] = gla
    return 0

cdef inline uint64_t chunk_bits(uint32_t off, uint32_t size) noexcept nogil:
    """code_map bits covering page offsets [off, off + size)."""
    cdef uint32_t first = off >> 6
    cdef uint32_t last = (off + size - 1) >> 6
    cdef uint64_t lo = (<uint64_t>1) << first
    if last >= 63:
        return ~(lo - 1)
    return ((<uint64_t>1) << (last + 1)) - lo


cdef int mem_slow(Cpu* c, uint32_t gla, uint32_t size, int is_write, uint32_t* val) noexcept nogil:
    """Any access the TLB did not satisfy. val: value to write or where to read into."""
    cdef uint32_t gpa, k, v, off, page
    cdef TlbEntry* e
    cdef uint8_t* hva
    if (gla & 0xFFF) + size > 0x1000:
        # page-crossing access: byte by byte, little endian
        if is_write:
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
    if translate(c, gla, &gpa):
        return RC_FAULT
    c.n_tlb_misses += 1
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
    e = &c.tlb[(gla >> 12) & (TLB_SIZE - 1)]
    if e.gpa_page != page or (e.tag_r != (gla & 0xFFFFF000U)):
        e.tag_w = 1
    e.tag_r = gla & 0xFFFFF000U
    e.gpa_page = page
    e.addend = <uintptr_t>(c.ram + (gpa & 0xFFFFF000U)) - <uintptr_t>(gla & 0xFFFFF000U)
    hva = c.ram + gpa
    if is_write:
        if c.code_map[page]:
            if c.code_map[page] & chunk_bits(off, size):
                invalidate_code(c, page)
        if c.code_map[page] == 0:
            e.tag_w = gla & 0xFFFFF000U
        if size == 1:
            hva[0] = <uint8_t>val[0]
        elif size == 2:
            memcpy(hva, val, 2)
        else:
            memcpy(hva, val, 4)
    else:
        v = 0
        memcpy(&v, hva, size)
        val[0] = v
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

cdef int fetch8(Cpu* c, uint32_t gla) noexcept nogil:
    """One code byte for the decoder; all ones where there is no RAM."""
    cdef uint32_t gpa
    if translate(c, gla, &gpa) or gpa >= c.ram_size:
        return 0xFF
    return c.ram[gpa]
