/* crc32 - table-driven CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320).
 * Checksums size bytes: a 64 KiB pseudo-random buffer, repeated as often as
 * needed. The table is built at run time and checked against the standard
 * check value CRC-32("123456789") = 0xCBF43926 first. */
#include "wl.h"

#define BUFFER_BYTES 65536u
#define CRC_POLY 0xEDB88320u
#define CRC_CHECK 0xCBF43926u

static uint32_t table[256];

static void make_table(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (CRC_POLY & (0u - (c & 1)));
        table[i] = c;
    }
}

/* Running CRC without the final inversion: start from 0xFFFFFFFF. */
static uint32_t crc_update(uint32_t crc, const uint8_t *p, uint32_t n)
{
    while (n--)
        crc = table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return crc;
}

int wl_run(uint32_t size)
{
    wl_check_size("crc32", size, 1, 0xFFFFFFFFu);
    make_table();

    static const uint8_t check[] = "123456789";
    uint32_t crc = ~crc_update(0xFFFFFFFFu, check, 9);
    if (crc != CRC_CHECK) {
        wl_printf("crc32: self-check failed: 0x%08x != 0x%08x\n", crc, CRC_CHECK);
        return WL_FAILED;
    }

    uint32_t len = size < BUFFER_BYTES ? size : BUFFER_BYTES;
    uint8_t *buf = wl_alloc(len);
    uint32_t seed = 0x12345678u;
    for (uint32_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(wl_rand(&seed) >> 24);

    crc = 0xFFFFFFFFu;
    for (uint32_t done = 0; done < size; done += len) {
        uint32_t n = size - done < len ? size - done : len;
        crc = crc_update(crc, buf, n);
    }
    crc = ~crc;

    wl_printf("crc32 size=%u checksum=0x%08x\n", size, crc);
    return WL_OK;
}
