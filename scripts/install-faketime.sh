#!/bin/sh
# Install Debian's faketime (libfaketime) for the clock-skew tests (tests/acceptance/
# test_takeover.py), where missing. Called by `make install`. Exits 0 when it is there.
set -eu

if command -v faketime >/dev/null 2>&1; then
    echo "install-faketime: $(command -v faketime) is installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-faketime: no apt-get here: install libfaketime (the faketime command) yourself" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-faketime: run as root (or install sudo) to install faketime with apt-get" >&2
        exit 1
    fi
fi

echo "install-faketime: installing Debian's faketime (apt-get update, apt-get install faketime)"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends faketime
command -v faketime >/dev/null 2>&1 || {
    echo "install-faketime: apt-get finished but faketime is missing" >&2
    exit 1
}
echo "install-faketime: installed $(command -v faketime)"
