/* pingpong - size round trips of a 4-byte message between two processes over
 * a pair of pipes: the parent sends, the child transforms the word and sends
 * it back. Every round trip is two writes, two reads and (on one CPU) two
 * blocking reads that switch processes. Checksum: every word that came back,
 * then the child's exit status. */
#include "wl.h"
#include "wlsys.h"

static int read_word(int fd, uint32_t *v)
{
    uint8_t *p = (uint8_t *)v;
    uint32_t got = 0;
    while (got < 4) {
        int n = wl_read(fd, p + got, 4 - got);
        if (n <= 0)
            return n;
        got += (uint32_t)n;
    }
    return 4;
}

int wl_run(uint32_t size)
{
    wl_check_size("pingpong", size, 1, 100000000);
    int to_child[2], to_parent[2];
    if (wl_pipe(to_child) < 0 || wl_pipe(to_parent) < 0) {
        wl_puts("pingpong: pipe failed\n");
        return WL_FAILED;
    }
    int pid = wl_fork();
    if (pid < 0) {
        wl_puts("pingpong: fork failed\n");
        return WL_FAILED;
    }
    if (pid == 0) {
        wl_close(to_child[1]);
        wl_close(to_parent[0]);
        uint32_t v, n = 0;
        while (read_word(to_child[0], &v) == 4) {
            v = wl_mix(v, 0x9E3779B9u) + n++;
            if (wl_write(to_parent[1], &v, 4) != 4)
                wl_child_exit(2);
        }
        wl_child_exit((int)(n & 0x7F));
    }
    wl_close(to_child[0]);
    wl_close(to_parent[1]);
    uint32_t v = 1, h = WL_CHECKSUM_SEED;
    for (uint32_t i = 0; i < size; i++) {
        if (wl_write(to_child[1], &v, 4) != 4 || read_word(to_parent[0], &v) != 4) {
            wl_printf("pingpong: the pipe broke in round %u\n", i);
            return WL_FAILED;
        }
        h = wl_mix(h, v);
        v ^= i;
    }
    wl_close(to_child[1]);
    int status = -1;
    if (wl_wait(&status) != pid) {
        wl_puts("pingpong: wait failed\n");
        return WL_FAILED;
    }
    h = wl_mix(h, (uint32_t)status);
    wl_printf("pingpong size=%u checksum=0x%08x\n", size, h);
    return WL_OK;
}
