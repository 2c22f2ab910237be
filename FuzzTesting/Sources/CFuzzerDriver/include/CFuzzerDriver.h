#ifndef TALLY_FUZZER_DRIVER_H
#define TALLY_FUZZER_DRIVER_H

#include <stddef.h>
#include <stdint.h>

// libFuzzer's driver (compiler-rt's libFuzzer, linked by `-sanitize=fuzzer`): parses libFuzzer's
// flags from argv and runs the fuzzing loop with `callback` as the target. The executables call
// it from their own entry point because SwiftPM's debug builds point `main` at the executable's
// module (so libFuzzer's own `main` is never linked).
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
