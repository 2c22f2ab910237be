// CRC-32C with the CPU's own instruction: about ten times the table-driven Swift code, which
// showed up in the agent's profile (every spool record and wire frame is checksummed). Swift has
// no portable access to these instructions, so they live in this small C target; CRC32C.swift
// keeps the table form for CPUs without them, and the tests compare the two.
#include "tally_crc32c.h"

#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>

#define TALLY_CRC_TARGET __attribute__((target("sse4.2")))
#define TALLY_CRC_WORD(crc, word) ((uint32_t)__builtin_ia32_crc32di((crc), (word)))
#define TALLY_CRC_BYTE(crc, byte) __builtin_ia32_crc32qi((crc), (byte))

int tally_crc32c_hardware(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    return (ecx & bit_SSE4_2) != 0;
}

#elif defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>

#define TALLY_CRC_TARGET __attribute__((target("crc")))
#define TALLY_CRC_WORD(crc, word) __builtin_arm_crc32cd((crc), (word))
#define TALLY_CRC_BYTE(crc, byte) __builtin_arm_crc32cb((crc), (byte))

int tally_crc32c_hardware(void) { return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0; }

#endif

#if defined(TALLY_CRC_TARGET)

TALLY_CRC_TARGET
uint32_t tally_crc32c_update(uint32_t crc, const uint8_t *bytes, size_t count) {
    while (count >= 8) {
        uint64_t word;
        memcpy(&word, bytes, 8);
        crc = TALLY_CRC_WORD(crc, word);
        bytes += 8;
        count -= 8;
    }
    while (count > 0) {
        crc = TALLY_CRC_BYTE(crc, *bytes);
        bytes += 1;
        count -= 1;
    }
    return crc;
}

#else

int tally_crc32c_hardware(void) { return 0; }

uint32_t tally_crc32c_update(uint32_t crc, const uint8_t *bytes, size_t count) {
    (void)bytes;
    (void)count;
    return crc;
}

#endif
