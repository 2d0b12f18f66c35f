/* qsort - quicksort of size pseudo-random signed 32-bit ints: median-of-three
 * pivot, Hoare partition, insertion sort for short runs, recursion on the
 * smaller part only (stack depth O(log n)). The result is checked to be in
 * order; checksum: the sorted values folded with wl_mix. */
#include "wl.h"

#define INSERTION_MAX 16

static void insertion_sort(int32_t *a, uint32_t n)
{
    for (uint32_t i = 1; i < n; i++) {
        int32_t v = a[i];
        uint32_t j = i;
        for (; j > 0 && a[j - 1] > v; j--)
            a[j] = a[j - 1];
        a[j] = v;
    }
}

static inline void swap(int32_t *x, int32_t *y)
{
    int32_t t = *x;
    *x = *y;
    *y = t;
}

static void quicksort(int32_t *a, uint32_t n)
{
    while (n > INSERTION_MAX) {
        /* Median of three into a[mid]: a[0] <= a[mid] <= a[n-1]. */
        uint32_t mid = n / 2;
        if (a[mid] < a[0])
            swap(&a[mid], &a[0]);
        if (a[n - 1] < a[mid]) {
            swap(&a[n - 1], &a[mid]);
            if (a[mid] < a[0])
                swap(&a[mid], &a[0]);
        }
        int32_t pivot = a[mid];

        /* Hoare partition: afterwards a[0..j] <= pivot <= a[j+1..n-1]. */
        uint32_t i = 0, j = n - 1;
        for (;;) {
            while (a[i] < pivot)
                i++;
            while (a[j] > pivot)
                j--;
            if (i >= j)
                break;
            swap(&a[i++], &a[j--]);
        }

        uint32_t left = j + 1, right = n - left;
        if (left < right) {
            quicksort(a, left);
            a += left;
            n = right;
        } else {
            quicksort(a + left, right);
            n = left;
        }
    }
    insertion_sort(a, n);
}

int wl_run(uint32_t size)
{
    wl_check_size("qsort", size, 1, 0x3FFFFFFFu);

    int32_t *a = wl_alloc(size * 4);
    uint32_t seed = 0x9E3779B9u;
    for (uint32_t i = 0; i < size; i++)
        a[i] = (int32_t)wl_rand(&seed);

    quicksort(a, size);

    uint32_t h = WL_CHECKSUM_SEED;
    for (uint32_t i = 0; i < size; i++) {
        if (i > 0 && a[i - 1] > a[i]) {
            wl_printf("qsort: not sorted at index %u\n", i);
            return WL_FAILED;
        }
        h = wl_mix(h, (uint32_t)a[i]);
    }

    wl_printf("qsort size=%u checksum=0x%08x\n", size, h);
    return WL_OK;
}
