/* ptrchase - memory-latency bound pointer chase. A buffer of size 32-bit
 * slots holds one random cyclic permutation (Sattolo's algorithm), so
 * following slot -> next visits every slot once, in random order, before
 * coming back. The chase takes size steps from slot 0 and checks that it
 * returns to slot 0 exactly at the last step (a single cycle of length size).
 * Checksum: every visited slot index folded with wl_mix. The bench size
 * uses a buffer of 16 MiB. */
#include "wl.h"

#define MAX_SIZE 0x3FFFFFFFu    /* size * 4 bytes must fit in 32 bits */

int wl_run(uint32_t size)
{
    wl_check_size("ptrchase", size, 2, MAX_SIZE);

    uint32_t *next = wl_alloc(size * 4);
    for (uint32_t i = 0; i < size; i++)
        next[i] = i;
    uint32_t seed = 0xC0FFEE11u;
    for (uint32_t i = size - 1; i > 0; i--) {
        uint32_t j = wl_rand_below(&seed, i);      /* j < i: one single cycle */
        uint32_t t = next[i];
        next[i] = next[j];
        next[j] = t;
    }

    uint32_t p = 0, h = WL_CHECKSUM_SEED, returns = 0;
    for (uint32_t steps = size; steps; steps--) {
        p = next[p];
        h = wl_mix(h, p);
        returns += p == 0;
    }
    if (returns != 1 || p != 0) {
        wl_printf("ptrchase: not a single cycle (slot 0 seen %u times, ended at %u)\n", returns, p);
        return WL_FAILED;
    }

    wl_printf("ptrchase size=%u checksum=0x%08x\n", size, h);
    return WL_OK;
}
