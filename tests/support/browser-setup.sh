#!/bin/sh
# The real browser of the playground's test (tests/system/test_playground.py): Debian's chromium
# and chromium-driver. Idempotent; installs what is missing (root, Debian), else only warns.
set -eu
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    # not fatal here: the rest of the suite runs, and the browser test fails saying the same
    echo "warning: the browser test needs chromium and chromedriver (apt-get install chromium chromium-driver)" >&2
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
chromium --version
