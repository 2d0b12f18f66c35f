/* wlmain.c - umain for the workloads (wl_run): the argument string is the size. */
#include "wl.h"

int umain(const char *arg)
{
    uint32_t size;
    if (!wl_parse_size(arg, &size)) {
        wl_printf("wl: expected a size, not \"%s\"\n", arg);
        return WL_BAD_SIZE;
    }
    return wl_run(size);
}
