#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the browser test (tests/ops/test_ui_browser.py).
# Idempotent, and never fails its caller: when it cannot install, it prints one line saying why
# the browser test will skip and exits 0.  Used by `make test`; run by hand: infra/install_chromium.sh
# Env: CHROMIUM_INSTALL_TIMEOUT (seconds for the install, default 600), SKIP_CHROMIUM_INSTALL=1.
set -u

for b in chromium chromium-browser google-chrome google-chrome-stable; do
    command -v "$b" >/dev/null 2>&1 && exit 0
done

skip() { echo "install_chromium: $* -- the browser test (tests/ops/test_ui_browser.py) will skip"; exit 0; }

[ "${SKIP_CHROMIUM_INSTALL:-0}" = 1 ] && skip "SKIP_CHROMIUM_INSTALL=1"
command -v apt-get >/dev/null 2>&1 || skip "no apt-get (not Debian/Ubuntu); install chromium by hand"
if [ "$(id -u)" = 0 ]; then SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"
else skip "not root and no passwordless sudo; run: sudo apt-get install chromium"
fi

limit="${CHROMIUM_INSTALL_TIMEOUT:-600}"
log="$(mktemp -t install-chromium.XXXXXX.log)"
apt() { $SUDO env DEBIAN_FRONTEND=noninteractive timeout "$1" apt-get -q -y -o Dpkg::Use-Pty=0 "${@:2}" >>"$log" 2>&1; }
why() { echo "$1 (exit $2; last line: $(grep -v '^\s*$' "$log" | tail -n1); log: $log)"; }

echo "install_chromium: installing Debian's chromium (up to ${limit}s; log: $log)"
# Stale or missing package lists are the usual cause of a failed install: update only then,
# because `apt-get update` alone can take a minute on a slow mirror.
if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt 180 update; rc=$?
    [ $rc = 0 ] || skip "$(why "apt-get update failed" $rc)"
fi
apt "$limit" install --no-install-recommends chromium; rc=$?
if [ $rc != 0 ]; then
    # An outdated list gives 404s on the .debs: refresh once and retry.
    apt 180 update && apt "$limit" install --no-install-recommends chromium; rc=$?
    [ $rc = 0 ] || skip "$(why "apt-get install chromium failed" $rc)"
fi
command -v chromium >/dev/null 2>&1 || skip "apt-get succeeded but no chromium on PATH"
echo "install_chromium: $(chromium --version 2>/dev/null || echo chromium) installed"
exit 0
