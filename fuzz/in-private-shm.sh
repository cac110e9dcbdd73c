#!/bin/sh
# Runs a command with a private, empty /dev/shm when this user may make one
# (root, with unshare), and says so to the fuzz targets (FUZZ_PRIVATE_SHM=1):
# only then do they list every named object, since listing attaches to each
# one, and other programs' objects are none of the fuzzers' business.
# Otherwise the command runs as it is, and listing is left out.
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null 2>&1 \
    && unshare -m --propagation private sh -c 'mount -t tmpfs tmpfs /dev/shm' 2>/dev/null; then
    exec unshare -m --propagation private sh -c \
        'mount -t tmpfs -o mode=1777,size=8g tmpfs /dev/shm && FUZZ_PRIVATE_SHM=1 exec "$@"' sh "$@"
fi
exec "$@"
