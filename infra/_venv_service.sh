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

skip() { echo "install $NAME: $* -- the tests that need it will skip"; rm -rf "$VENV.partial"; exit 0; }
pipq() { timeout "$limit" "$VENV.partial/bin/pip" install -q --disable-pip-version-check "$@" >>"$log" 2>&1; }

[ -f "$VENV/.installed" ] && exit 0
[ "${SKIP_SERVICE_INSTALL:-0}" = 1 ] && skip "SKIP_SERVICE_INSTALL=1"
command -v "$PY" >/dev/null 2>&1 || skip "no $PY"
echo "install $NAME: into $VENV (log: $log)"
# Built under .partial and renamed into place, so an interrupted install is never taken as done.
rm -rf "$VENV.partial" && mkdir -p "$VENVS"
"$PY" -m venv "$VENV.partial" >>"$log" 2>&1 || skip "venv failed"
install_into || skip "pip failed (last line: $(grep -v '^\s*$' "$log" | tail -n1); log: $log)"
PATH="$VENV.partial/bin:$PATH" bash -c "$CHECK" >>"$log" 2>&1 || skip "installed but the check failed: $CHECK (log: $log)"
touch "$VENV.partial/.installed"
rm -rf "$VENV" && mv "$VENV.partial" "$VENV"
echo "install $NAME: done"
