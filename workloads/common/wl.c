/* wl.c - code shared by the guest and native builds: output formatting and
 * size parsing, so both builds print byte-identical text. */
#include "wl.h"

void wl_puts(const char *s)
{
    while (*s)
        wl_putc(*s++);
}

static void put_padded(const char *s, uint32_t len, uint32_t width, char pad)
{
    for (; width > len; width--)
        wl_putc(pad);
    while (len--)
        wl_putc(*s++);
}

/* Formats V in BASE (10 or 16, lowercase), with a '-' if NEGATIVE,
 * right-aligned in WIDTH; zero padding goes between the sign and the digits. */
static void put_number(uint32_t v, uint32_t base, int negative, uint32_t width, char pad)
{
    char buf[11];
    uint32_t n = sizeof buf;

    do {
        buf[--n] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (negative) {
        if (pad == '0') {
            wl_putc('-');
            width = width ? width - 1 : 0;
        } else {
            buf[--n] = '-';
        }
    }
    put_padded(buf + n, sizeof buf - n, width, pad);
}

void wl_printf(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            wl_putc(*fmt);
            continue;
        }
        char pad = ' ';
        uint32_t width = 0;
        if (*++fmt == '0') {
            pad = '0';
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (uint32_t)(*fmt++ - '0');

        switch (*fmt) {
        case 'u':
            put_number(va_arg(ap, unsigned int), 10, 0, width, pad);
            break;
        case 'x':
            put_number(va_arg(ap, unsigned int), 16, 0, width, pad);
            break;
        case 'd': {
            int v = va_arg(ap, int);
            put_number(v < 0 ? 0u - (uint32_t)v : (uint32_t)v, 10, v < 0, width, pad);
            break;
        }
        case 'c': {
            char c = (char)va_arg(ap, int);
            put_padded(&c, 1, width, ' ');
            break;
        }
        case 's': {
            const char *s = va_arg(ap, const char *);
            uint32_t len = 0;
            while (s[len])
                len++;
            put_padded(s, len, width, ' ');
            break;
        }
        case '%':
            wl_putc('%');
            break;
        case '\0':      /* a lone '%' ends the format */
            va_end(ap);
            return;
        default:        /* unknown conversion: print it as written */
            wl_putc('%');
            wl_putc(*fmt);
            break;
        }
    }
    va_end(ap);
}

int wl_parse_size(const char *s, uint32_t *size)
{
    uint32_t v = 0;
    const char *p = s;

    for (; *p >= '0' && *p <= '9'; p++) {
        uint32_t d = (uint32_t)(*p - '0');
        if (v > (0xFFFFFFFFu - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    if (p == s || (*p != '\0' && *p != ' '))
        return 0;
    *size = v;
    return 1;
}

void wl_check_size(const char *name, uint32_t size, uint32_t lo, uint32_t hi)
{
    if (size < lo || size > hi) {
        wl_printf("%s: size %u out of range [%u, %u]\n", name, size, lo, hi);
        wl_exit(WL_BAD_SIZE);
    }
}
