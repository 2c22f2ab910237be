// libcrypto (OpenSSL 3) for SHA-256 and HMAC-SHA256, without Foundation.
// SHA256_Init/Update/Final are deprecated in OpenSSL 3 in favour of EVP, but they hash without
// the per-call algorithm fetch of the EVP one-shots: the fingerprint hashes every event.
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>
#include <openssl/hmac.h>
#include <openssl/evp.h>
