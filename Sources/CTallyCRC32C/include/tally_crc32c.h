#ifndef TALLY_CRC32C_H
#define TALLY_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/// 1 when this CPU has a CRC-32C instruction (x86-64 SSE 4.2, or ARMv8 CRC32), else 0.
int tally_crc32c_hardware(void);

/// Continues the raw (not inverted) CRC-32C register `crc` over `count` bytes with that
/// instruction. Call only when tally_crc32c_hardware() is 1.
uint32_t tally_crc32c_update(uint32_t crc, const uint8_t *bytes, size_t count);

#endif
