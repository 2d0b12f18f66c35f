/* touchpages - touches size fresh pages, one word each: one demand-zero page
 * fault per page. The pages come in batches of up to 16 MiB from wl_pages,
 * are written, read back (checking that the rest of each page is zero where
 * sampled) and given back with wl_pages_free, so any size fits in a small
 * guest. Checksum: the words read back. */
#include "wl.h"
#include "wlsys.h"

#define PAGE 4096u
#define BATCH 4096u     /* pages */

int wl_run(uint32_t size)
{
    wl_check_size("touchpages", size, 1, 100000000);
    uint32_t h = WL_CHECKSUM_SEED;
    for (uint32_t done = 0; done < size;) {
        uint32_t n = size - done < BATCH ? size - done : BATCH;
        uint8_t *mem = wl_pages(n * PAGE);
        for (uint32_t i = 0; i < n; i++) {
            uint32_t k = done + i;
            ((uint32_t *)(mem + i * PAGE))[(k * 7u) % 1024u] = k * 0x9E3779B9u + 1;
        }
        for (uint32_t i = 0; i < n; i++) {
            uint32_t k = done + i, at = (k * 7u) % 1024u;
            const uint32_t *page = (const uint32_t *)(mem + i * PAGE);
            if (page[(at + 512u) % 1024u] != 0) {
                wl_printf("touchpages: page %u is not zero-filled\n", k);
                return WL_FAILED;
            }
            h = wl_mix(h, page[at]);
        }
        wl_pages_free(mem, n * PAGE);
        done += n;
    }
    wl_printf("touchpages size=%u checksum=0x%08x\n", size, h);
    return WL_OK;
}
