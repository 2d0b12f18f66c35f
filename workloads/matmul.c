/* matmul - integer matrix multiply C = A * B of two size x size matrices of
 * pseudo-random 32-bit words (arithmetic mod 2^32), in i-k-j order so the
 * inner loop streams through rows. Checksum: C's elements folded row by row
 * with wl_mix. */
#include "wl.h"

#define MAX_SIZE 8192u          /* size * size * 4 must fit in 32 bits */

static void multiply(uint32_t n, const uint32_t *a, const uint32_t *b, uint32_t *c)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t *crow = c + i * n;
        for (uint32_t j = 0; j < n; j++)
            crow[j] = 0;
        for (uint32_t k = 0; k < n; k++) {
            uint32_t aik = a[i * n + k];
            const uint32_t *brow = b + k * n;
            for (uint32_t j = 0; j < n; j++)
                crow[j] += aik * brow[j];
        }
    }
}

int wl_run(uint32_t size)
{
    wl_check_size("matmul", size, 1, MAX_SIZE);

    uint32_t n = size, words = n * n;
    uint32_t *a = wl_alloc(words * 4);
    uint32_t *b = wl_alloc(words * 4);
    uint32_t *c = wl_alloc(words * 4);
    uint32_t seed = 0x2545F491u;
    for (uint32_t i = 0; i < words; i++) {
        a[i] = wl_rand(&seed);
        b[i] = wl_rand(&seed);
    }

    multiply(n, a, b, c);

    uint32_t h = WL_CHECKSUM_SEED;
    for (uint32_t i = 0; i < words; i++)
        h = wl_mix(h, c[i]);

    wl_printf("matmul size=%u checksum=0x%08x\n", size, h);
    return WL_OK;
}
