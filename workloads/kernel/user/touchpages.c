/* touchpages - allocates size fresh pages and writes one word into each (one
 * demand-zero page fault per page), then reads every page back, checking that
 * the rest of it is still zero where sampled. Checksum: the words read back. */
#include "wl.h"

#define PAGE 4096u

int wl_run(uint32_t size)
{
    wl_check_size("touchpages", size, 1, 1u << 18);
    uint8_t *mem = wl_alloc(size * PAGE);
    for (uint32_t i = 0; i < size; i++)
        ((uint32_t *)(mem + i * PAGE))[(i * 7u) % 1024u] = i * 0x9E3779B9u + 1;
    uint32_t h = WL_CHECKSUM_SEED;
    for (uint32_t i = 0; i < size; i++) {
        const uint32_t *page = (const uint32_t *)(mem + i * PAGE);
        uint32_t at = (i * 7u) % 1024u;
        if (page[(at + 512u) % 1024u] != 0) {
            wl_printf("touchpages: page %u is not zero-filled\n", i);
            return WL_FAILED;
        }
        h = wl_mix(h, page[at]);
    }
    wl_printf("touchpages size=%u checksum=0x%08x\n", size, h);
    return WL_OK;
}
