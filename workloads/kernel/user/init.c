/* init - the first process. Its argument is the kernel command line:
 *
 *   run=NAME:ARG[,NAME:ARG...]     spawns every program at once (they run
 *                                  concurrently, preempted by the timer) and
 *                                  waits for all of them
 *   nano=OP:ITERS[,OP:ITERS...]    then runs the nano program for each, one
 *                                  after the other
 *
 * and exits with 0 if every program exited with 0, else 1 (the kernel passes
 * init's status to the debug-exit port). */
#include "wl.h"
#include "usys.h"

#define MAX_KIDS 32

static const char *find_value(const char *cmd, const char *key)
{
    for (const char *p = cmd; *p; p++) {
        if (p != cmd && p[-1] != ' ')
            continue;
        uint32_t i = 0;
        while (key[i] && p[i] == key[i])
            i++;
        if (!key[i] && p[i] == '=')
            return p + i + 1;
    }
    return 0;
}

/* Copies the next item of a comma-separated list (ending at a space or NUL)
 * into item; returns where the next item starts, or 0 at the end. */
static const char *next_item(const char *p, char *item, uint32_t max)
{
    if (!*p || *p == ' ')
        return 0;
    uint32_t n = 0;
    while (*p && *p != ',' && *p != ' ') {
        if (n < max - 1)
            item[n++] = *p;
        p++;
    }
    item[n] = 0;
    return *p == ',' ? p + 1 : p;
}

static struct {
    int pid;
    char name[64];
} kids[MAX_KIDS];
static uint32_t nkids;

static const char *kid_name(int pid)
{
    for (uint32_t i = 0; i < nkids; i++) {
        if (kids[i].pid == pid)
            return kids[i].name;
    }
    return "?";
}

/* Waits for every child; returns how many exited with a nonzero status. */
static int wait_all(void)
{
    int failed = 0, pid, status;
    while ((pid = sys_wait(-1, &status)) > 0) {
        if (status != 0) {
            wl_printf("init: %s (pid %d) exited with status %d\n", kid_name(pid), pid, status);
            failed++;
        }
    }
    nkids = 0;
    return failed;
}

static int spawn(const char *name, const char *arg, const char *label)
{
    int pid = sys_spawn(name, arg);
    if (pid < 0) {
        wl_printf("init: cannot spawn %s: error %d\n", label, pid);
        return 1;
    }
    if (nkids < MAX_KIDS) {
        kids[nkids].pid = pid;
        uint32_t i = 0;
        for (; label[i] && i < sizeof kids[0].name - 1; i++)
            kids[nkids].name[i] = label[i];
        kids[nkids].name[i] = 0;
        nkids++;
    }
    return 0;
}

int umain(const char *cmd)
{
    char item[64];
    int failed = 0;

    const char *p = find_value(cmd, "run");
    if (p) {
        while ((p = next_item(p, item, sizeof item))) {
            char name[64];
            uint32_t n = 0;
            for (; item[n] && item[n] != ':'; n++)
                name[n] = item[n];
            name[n] = 0;
            if (!item[n]) {
                wl_printf("init: expected NAME:ARG, not \"%s\"\n", item);
                failed++;
                continue;
            }
            failed += spawn(name, item + n + 1, item);
            if (nkids == MAX_KIDS)
                failed += wait_all();
        }
        failed += wait_all();
    }
    p = find_value(cmd, "nano");
    if (p) {
        while ((p = next_item(p, item, sizeof item))) {
            failed += spawn("nano", item, item);
            failed += wait_all();
        }
    }
    return failed ? WL_FAILED : WL_OK;
}
