#!/bin/sh
# Install Debian's chromium for the dashboard's browser tests (tests/browser), where missing.
# Called by `make install`. Exits 0 when /usr/bin/chromium is already there.
#   AFTER_CHROMIUM=/path/to/chromium   use that browser instead (nothing is installed)
set -eu

CHROMIUM="${AFTER_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
    echo "install-browser: $CHROMIUM is installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: no apt-get here: install Chromium yourself and set AFTER_CHROMIUM=/path/to/it" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-browser: run as root (or install sudo) to install chromium with apt-get" >&2
        exit 1
    fi
fi

echo "install-browser: installing Debian's chromium (apt-get update, apt-get install chromium)"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
if [ ! -x /usr/bin/chromium ]; then
    echo "install-browser: apt-get finished but /usr/bin/chromium is missing" >&2
    exit 1
fi
echo "install-browser: installed $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
