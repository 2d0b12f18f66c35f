/* dhry - a synthetic integer "systems code" mix in the spirit of Dhrystone
 * (an original program, not Dhrystone's source): calls with pointer and
 * struct arguments, a linked record copied by value, an enum state machine,
 * string copy and compare, 1-D and 2-D array updates, 32-bit multiply and
 * divide. size is the number of iterations. Checksum: a running accumulator
 * and the final global state, folded with wl_mix. */
#include "wl.h"

#define NOINLINE __attribute__((noinline))
#define TEXT_LEN 32
#define VEC_LEN 64
#define GRID_LEN 32

enum color { RED, GREEN, BLUE, BLACK };

struct record {
    struct record *link;
    enum color color;
    uint32_t number;
    char text[TEXT_LEN];
};

static struct record rec_a, rec_b;
static char text_1[TEXT_LEN], text_2[TEXT_LEN];
static uint32_t vec[VEC_LEN];
static uint32_t grid[GRID_LEN][GRID_LEN];
static enum color color_glob;
static uint32_t flag_glob;

static const char *const phrases[2] = {
    "A WORKLOAD STRING, EVEN PASS  ",
    "A WORKLOAD STRING, ODD PASS   ",
};

NOINLINE static void str_copy(char *dst, const char *src)
{
    while ((*dst++ = *src++) != '\0')
        ;
}

NOINLINE static int str_compare(const char *a, const char *b)
{
    while (*a != '\0' && *a == *b) {
        a++;
        b++;
    }
    return (unsigned char)*a - (unsigned char)*b;
}

/* A small state machine over the enum. */
NOINLINE static enum color next_color(enum color c, uint32_t v)
{
    switch (c) {
    case RED:
        return v & 1 ? GREEN : BLUE;
    case GREEN:
        return v > 1000 ? BLACK : RED;
    case BLUE:
        return flag_glob ? RED : GREEN;
    default:
        return (enum color)(v % 3);
    }
}

/* Multiply, divide and remainder on 32-bit values; divisors are never 0. */
NOINLINE static uint32_t arith(uint32_t a, uint32_t b)
{
    uint32_t q = (a * 7u + b) / (b % 13u + 1u);
    uint32_t r = (a ^ b) % (a % 97u + 3u);
    int32_t s = (int32_t)(q - r * 5u) / -3;    /* signed division, negative divisor */
    return q + r + (uint32_t)s;
}

/* Takes the record by value, returns it updated by value. */
NOINLINE static struct record touch(struct record r, uint32_t v)
{
    r.number += v;
    r.color = next_color(r.color, r.number);
    r.text[v % (TEXT_LEN - 1)] = (char)('a' + v % 26u);
    return r;
}

NOINLINE static void update_record(struct record *r, uint32_t v, int cmp)
{
    struct record *other = r->link;

    *other = touch(*r, v);
    other->link = r;
    if (cmp < 0)
        r->number = other->number / 3u + v;
    else
        r->number = other->number * 3u - v;
    flag_glob = other->color == color_glob;
    color_glob = next_color(color_glob, r->number);
}

NOINLINE static void update_arrays(uint32_t idx, uint32_t v)
{
    uint32_t i = idx % GRID_LEN, j = (idx * 7u + 3u) % GRID_LEN;

    vec[idx % VEC_LEN] += v;
    vec[(idx + VEC_LEN / 2) % VEC_LEN] = vec[idx % VEC_LEN] - idx;
    grid[i][j] += vec[(idx + 1) % VEC_LEN];
    grid[j][i] = grid[i][j] ^ v;
    for (uint32_t k = 0; k < 8; k++)
        grid[i][(j + k) % GRID_LEN] += k;
}

int wl_run(uint32_t size)
{
    wl_check_size("dhry", size, 1, 0xFFFFFFFFu);

    rec_a.link = &rec_b;
    rec_b.link = &rec_a;
    rec_a.color = GREEN;
    str_copy(rec_a.text, "A RECORD NAMED ALPHA           ");
    str_copy(text_1, phrases[0]);

    uint32_t acc = WL_CHECKSUM_SEED;
    for (uint32_t it = 1; it <= size; it++) {
        uint32_t v = arith(it, acc);

        str_copy(text_2, phrases[it & 1]);
        text_2[TEXT_LEN - 4] = (char)('A' + it % 26u);
        int cmp = str_compare(text_1, text_2);
        if (cmp > 0)
            str_copy(text_1, text_2);

        struct record *r = it & 2 ? &rec_a : &rec_b;
        update_record(r, v, cmp);
        update_arrays(it + v, v);
        acc = wl_mix(acc, v + r->number + (uint32_t)color_glob);
    }

    uint32_t h = wl_mix(acc, rec_a.number);
    h = wl_mix(h, rec_b.number);
    for (uint32_t i = 0; i < TEXT_LEN; i++)
        h = wl_mix(h, (uint32_t)(uint8_t)(rec_a.text[i] ^ rec_b.text[i] ^ text_1[i]));
    for (uint32_t i = 0; i < VEC_LEN; i++)
        h = wl_mix(h, vec[i]);
    for (uint32_t i = 0; i < GRID_LEN; i++)
        for (uint32_t j = 0; j < GRID_LEN; j++)
            h = wl_mix(h, grid[i][j]);

    wl_printf("dhry size=%u checksum=0x%08x\n", size, h);
    return WL_OK;
}
