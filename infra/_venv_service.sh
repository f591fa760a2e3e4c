# Shared by the install_*.sh scripts: build one service into its own virtualenv, never failing the
# caller. Sourced with NAME (venv folder name), CHECK (a command that succeeds once it is installed,
# run with the venv's bin first on PATH) and install_into VENV (the pip steps) defined.
# Env: IRSFLOW_SERVICE_VENVS (where the venvs live, default <repo>/.venvs),
#      SERVICE_INSTALL_TIMEOUT (seconds per pip step, default 900), SKIP_SERVICE_INSTALL=1.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENVS="${IRSFLOW_SERVICE_VENVS:-$ROOT/.venvs}"
VENV="$VENVS/$NAME"
PY="${PY:-python3.11}"
limit="${SERVICE_INSTALL_TIMEOUT:-900}"
log="$(mktemp -t "install-$NAME.XXXXXX.log")"

skip() {
    echo "install $NAME: $* -- the tests that need it will skip"
    rm -rf "$VENV.partial"
    mkdir -p "$VENVS" && echo "$*" > "$VENVS/$NAME.why"  # the tests quote it in their skip message
    exit 0
}
pipq() { timeout "$limit" "$VENV.partial/bin/pip" install -q --disable-pip-version-check "$@" >>"$log" 2>&1; }

[ -f "$VENV/.installed" ] && exit 0
[ "${SKIP_SERVICE_INSTALL:-0}" = 1 ] && skip "SKIP_SERVICE_INSTALL=1"
command -v "$PY" >/dev/null 2>&1 || skip "no $PY"
mkdir -p "$VENVS"
# One install at a time per service: a second caller waits, then finds it done.
exec 9>"$VENVS/.$NAME.lock"
flock 9 2>/dev/null || true
[ -f "$VENV/.installed" ] && exit 0
echo "install $NAME: into $VENV (log: $log)"
# Built under .partial and renamed into place, so an interrupted install is never taken as done.
rm -rf "$VENV.partial"
"$PY" -m venv "$VENV.partial" >>"$log" 2>&1 || skip "venv failed"
install_into || skip "pip failed (last line: $(grep -v '^\s*$' "$log" | tail -n1); log: $log)"
PATH="$VENV.partial/bin:$PATH" bash -c "$CHECK" >>"$log" 2>&1 || skip "installed but the check failed: $CHECK (log: $log)"
rm -rf "$VENV" && mv "$VENV.partial" "$VENV"
# Console scripts and activate name the folder they were built in: point them at the final one.
grep -rlI --null "$VENV.partial" "$VENV/bin" 2>/dev/null | xargs -0 -r sed -i "s|$VENV.partial|$VENV|g"
rm -f "$VENVS/$NAME.why"
touch "$VENV/.installed"  # last: anything interrupted before it is rebuilt from scratch
echo "install $NAME: done"
