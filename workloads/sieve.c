/* sieve - segmented sieve of Eratosthenes: finds every prime <= size.
 * Base primes up to sqrt(size) come from a plain byte sieve; the range is
 * then sieved in cache-sized segments, so memory stays O(sqrt(size)) and the
 * work is compute bound. Checksum: the primes in order, folded with wl_mix,
 * then the prime count. */
#include "wl.h"

#define SEGMENT_BYTES 32768u
#define MAX_SIZE 0xF0000000u    /* keeps lo + SEGMENT_BYTES and p*p in 32 bits */

static uint32_t isqrt(uint32_t n)
{
    uint32_t r = 0;
    for (uint32_t bit = 1u << 30; bit; bit >>= 2) {
        if (n >= r + bit) {
            n -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
    }
    return r;
}

int wl_run(uint32_t size)
{
    wl_check_size("sieve", size, 2, MAX_SIZE);

    /* Base primes: a byte sieve over [0, root]. */
    uint32_t root = isqrt(size);
    uint8_t *composite = wl_alloc(root + 1);
    for (uint32_t i = 0; i <= root; i++)
        composite[i] = 0;
    uint32_t nbase = 0;
    for (uint32_t i = 2; i <= root; i++) {
        if (composite[i])
            continue;
        nbase++;
        for (uint32_t j = i * i; j <= root; j += i)
            composite[j] = 1;
    }
    uint32_t *base = wl_alloc(nbase * 4 + 4);
    uint32_t *next = wl_alloc(nbase * 4 + 4);   /* per base prime: next multiple to strike */
    nbase = 0;
    for (uint32_t i = 2; i <= root; i++) {
        if (!composite[i]) {
            base[nbase] = i;
            next[nbase++] = i * i;
        }
    }

    /* Segments [lo, lo + SEGMENT_BYTES) up to size. */
    uint8_t *seg = wl_alloc(SEGMENT_BYTES);
    uint32_t count = 0, h = WL_CHECKSUM_SEED;
    for (uint32_t lo = 0; lo <= size; lo += SEGMENT_BYTES) {
        uint32_t len = size - lo + 1 < SEGMENT_BYTES ? size - lo + 1 : SEGMENT_BYTES;
        for (uint32_t i = 0; i < len; i++)
            seg[i] = 0;
        for (uint32_t k = 0; k < nbase; k++) {
            uint32_t p = base[k], j = next[k] - lo;
            for (; j < len; j += p)
                seg[j] = 1;
            next[k] = lo + j;
        }
        for (uint32_t i = lo < 2 ? 2 - lo : 0; i < len; i++) {
            if (!seg[i]) {
                count++;
                h = wl_mix(h, lo + i);
            }
        }
    }
    h = wl_mix(h, count);

    wl_printf("sieve size=%u checksum=0x%08x\n", size, h);
    return WL_OK;
}
