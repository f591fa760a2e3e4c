# Shared by the install_*.sh scripts: build one service into its own virtualenv from its lock
# (infra/locks/NAME.txt, see infra/lock.py), never failing the caller. Sourced with NAME (the venv
# folder and lock name) and CHECK (a command that succeeds once it is installed, run with the venv's
# bin first on PATH) defined, and optionally after_install (extra steps, run in the new venv).
# Env: IRSFLOW_SERVICE_VENVS (where the venvs live, default <repo>/.venvs),
#      SERVICE_INSTALL_TIMEOUT (seconds for the install, default 900), SKIP_SERVICE_INSTALL=1,
#      TORCH_CPU_INDEX (PyTorch's CPU wheel index, where pip is not configured to find torch==X+cpu).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENVS="${IRSFLOW_SERVICE_VENVS:-$ROOT/.venvs}"
VENV="$VENVS/$NAME"
LOCK="$ROOT/infra/locks/$NAME.txt"
PY="${PY:-python3.11}"
limit="${SERVICE_INSTALL_TIMEOUT:-900}"
log="$(mktemp -t "install-$NAME.XXXXXX.log")"

skip() {
    echo "install $NAME: $* -- the tests that need it will skip"
    rm -rf "$VENV.partial"
    mkdir -p "$VENVS" && echo "$*" > "$VENVS/$NAME.why"  # the tests quote it in their skip message
    exit 0
}
# The stamp is the lock's digest: a changed lock rebuilds the environment.
want="$(sha256sum "$LOCK" 2>/dev/null | cut -c1-64)"
[ -n "$want" ] && [ "$(cat "$VENV/.installed" 2>/dev/null)" = "$want" ] && exit 0
[ "${SKIP_SERVICE_INSTALL:-0}" = 1 ] && skip "SKIP_SERVICE_INSTALL=1"
[ -n "$want" ] || skip "no lock at $LOCK"
command -v "$PY" >/dev/null 2>&1 || skip "no $PY"
mkdir -p "$VENVS"
# One install at a time per service: a second caller waits, then finds it done.
exec 9>"$VENVS/.$NAME.lock"
flock 9 2>/dev/null || true
[ "$(cat "$VENV/.installed" 2>/dev/null)" = "$want" ] && exit 0
echo "install $NAME: into $VENV from ${LOCK#"$ROOT"/} (log: $log)"
# Built under .partial and renamed into place, so an interrupted install is never taken as done.
rm -rf "$VENV.partial"
"$PY" -m venv "$VENV.partial" >>"$log" 2>&1 || skip "venv failed"
timeout "$limit" "$PY" "$ROOT/infra/lock.py" install "$VENV.partial" "$NAME" >>"$log" 2>&1 \
    || skip "install from the lock failed (last line: $(grep -v '^\s*$' "$log" | tail -n1); log: $log)"
if declare -F after_install >/dev/null; then after_install >>"$log" 2>&1 || skip "after_install failed (log: $log)"; fi
PATH="$VENV.partial/bin:$PATH" bash -c "$CHECK" >>"$log" 2>&1 || skip "installed but the check failed: $CHECK (log: $log)"
rm -rf "$VENV" && mv "$VENV.partial" "$VENV"
# Console scripts and activate name the folder they were built in: point them at the final one.
grep -rlI --null "$VENV.partial" "$VENV/bin" 2>/dev/null | xargs -0 -r sed -i "s|$VENV.partial|$VENV|g"
rm -f "$VENVS/$NAME.why"
echo "$want" > "$VENV/.installed"  # last: anything interrupted before it is rebuilt from scratch
echo "install $NAME: done"
