/* forkwait - size rounds of fork and wait. Each round the parent writes one
 * word into a 16-page buffer and forks; the child reads every page (still
 * shared), writes into four of them (copy-on-write faults), and exits with a
 * status made from what it read; the parent waits and folds the status into
 * the checksum. Exercises fork's address-space copy, COW faults, exit and
 * wait. Checksum: the children's statuses in order, then the final buffer. */
#include "wl.h"
#include "wlsys.h"

#define PAGES 16u
#define WORDS_PER_PAGE 1024u

int wl_run(uint32_t size)
{
    wl_check_size("forkwait", size, 1, 10000000);
    uint32_t *buf = wl_alloc(PAGES * WORDS_PER_PAGE * 4);
    for (uint32_t w = 0; w < PAGES * WORDS_PER_PAGE; w++)
        buf[w] = 0;
    for (uint32_t p = 0; p < PAGES; p++)
        buf[p * WORDS_PER_PAGE] = p;

    uint32_t h = WL_CHECKSUM_SEED, rng = 0x2545F491u;
    for (uint32_t i = 0; i < size; i++) {
        uint32_t k = wl_rand(&rng);
        buf[(k % PAGES) * WORDS_PER_PAGE] ^= k;
        int pid = wl_fork();
        if (pid < 0) {
            wl_printf("forkwait: fork failed (%d) in round %u\n", pid, i);
            return WL_FAILED;
        }
        if (pid == 0) {
            uint32_t s = i;
            for (uint32_t p = 0; p < PAGES; p++)
                s = wl_mix(s, buf[p * WORDS_PER_PAGE]);
            for (uint32_t j = 0; j < 4; j++)
                buf[((k >> (4 * j)) % PAGES) * WORDS_PER_PAGE + 1 + j] = s;
            for (uint32_t j = 0; j < 4; j++)
                s = wl_mix(s, buf[((k >> (4 * j)) % PAGES) * WORDS_PER_PAGE + 1 + j]);
            wl_child_exit((int)((s ^ (s >> 8) ^ (s >> 16) ^ (s >> 24)) & 0xFF));
        }
        int status = -1;
        int w = wl_wait(&status);
        if (w != pid) {
            wl_printf("forkwait: wait returned %d, not %d\n", w, pid);
            return WL_FAILED;
        }
        h = wl_mix(h, (uint32_t)status);
    }
    for (uint32_t p = 0; p < PAGES; p++) {
        if (buf[p * WORDS_PER_PAGE + 1] != 0) {     /* the children's writes stayed theirs */
            wl_printf("forkwait: a child's write reached the parent's page %u\n", p);
            return WL_FAILED;
        }
        h = wl_mix(h, buf[p * WORDS_PER_PAGE]);
    }
    wl_printf("forkwait size=%u checksum=0x%08x\n", size, h);
    return WL_OK;
}
