#ifndef TALLY_CZSTD_SHIM_H
#define TALLY_CZSTD_SHIM_H
#define ZSTD_STATIC_LINKING_ONLY 0
#include <zstd.h>
#include <zstd_errors.h>
#endif
