/* CRC-32 (ISO-HDLC, reflected polynomial 0xEDB88320): the same value as Python's zlib.crc32. */
#include "ek_internal.h"

uint32_t ek_crc32(const uint8_t *data, size_t n) {
    static uint32_t table[256];
    static int ready = 0;
    if (!ready) { /* idempotent: concurrent first calls write the same values */
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}
