// Nothing to compile: the module only declares libFuzzer's driver (include/CFuzzerDriver.h).
#include "CFuzzerDriver.h"
