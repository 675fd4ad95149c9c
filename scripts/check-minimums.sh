#!/usr/bin/env bash
# The lowest versions pyproject.toml allows really work: installs them (every direct
# dependency at its minimum, uv's --resolution lowest-direct) into a temporary venv,
# starts the gateway on the local store, logs in, writes a project and reads it back
# from the event stream. Needs uv on PATH and the package index. Prints what it ran on.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
gateway_pid=""
cleanup() {
  if [ -n "$gateway_pid" ] && kill -0 "$gateway_pid" 2>/dev/null; then
    kill "$gateway_pid"
    wait "$gateway_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

python="${PYTHON:-python3}"
uv venv --quiet --python "$(command -v "$python")" "$work/venv"
# Built from a copy: the build leaves nothing in the source tree.
mkdir "$work/src"
cp -r "$root/app" "$root/pyproject.toml" "$root/README.md" "$work/src/"
uv pip install --quiet --python "$work/venv/bin/python" --resolution lowest-direct "$work/src"
echo "minimums: installed $(uv pip list --python "$work/venv/bin/python" 2>/dev/null \
  | awk 'NR>2 {printf "%s%s==%s", sep, $1, $2; sep=" "}')"
# Every module imports (the etcd and Consul clients too, which the run below does not use).
(cd "$work" && "$work/venv/bin/python" -c '
import importlib, pkgutil, app
for module in pkgutil.walk_packages(app.__path__, "app."):
    if not module.name.endswith(".__main__"):
        importlib.import_module(module.name)
')

port="$("$work/venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir "$work/run"
(
  cd "$work/run"
  exec env -i PATH="$work/venv/bin:/usr/bin:/bin" HOME="$work" ADMIN_PASS=minimums \
    ADMIN_SECRET=minimums-secret-0123456789-0123456789 LOG_LEVEL=warning \
    space-cloud run --host 127.0.0.1 --port "$port" --id minimums \
    --advertise-addr "127.0.0.1:$port" --config "$work/run/config.yaml"
) >"$work/gateway.log" 2>&1 &
gateway_pid=$!

if ! "$work/venv/bin/python" - "$port" "$gateway_pid" <<'PY'; then
import json, os, sys, time, urllib.error, urllib.request

port, pid = sys.argv[1], int(sys.argv[2])
base = f"http://127.0.0.1:{port}"


def call(method, path, body=None, token=None, timeout=5):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data, headers, method=method)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        sys.exit(f"minimums: {method} {path}: {error.code} {error.read().decode()}")


deadline = time.monotonic() + 120  # a bound on a hang; a loaded machine starts slowly
while True:
    os.kill(pid, 0)  # raises once the gateway has exited
    try:
        if call("GET", "/readyz").status == 200:
            break
    except (urllib.error.URLError, ConnectionError):
        pass
    if time.monotonic() > deadline:
        sys.exit("minimums: the gateway was not ready within 120 s")
    time.sleep(0.1)

token = json.load(call("POST", "/v1/config/login", {"user": "admin", "pass": "minimums"}))["token"]
stream = call("GET", "/v1/config/events", token=token, timeout=10)
assert stream.headers["Content-Type"].startswith("text/event-stream"), stream.headers
written = call("PUT", "/v1/config/projects/p1", {"id": "p1", "name": "minimums"}, token)
revision = json.load(written)["revision"]
assert written.status == 201, written.status

events, fields = [], {}
for raw in stream:
    line = raw.decode().rstrip("\r\n")
    if line:
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")
        continue
    if "data" in fields:
        events.append((fields.get("event", "message"), json.loads(fields["data"])))
        if events[-1][0] == "project.put":
            break
    fields = {}
kinds = [kind for kind, _ in events]
assert kinds[0] == "snapshot", kinds
assert events[-1] == ("project.put", events[-1][1]) and events[-1][1]["revision"] == revision, events
metrics = call("GET", "/metrics").read().decode()
assert "sc_applied_revision" in metrics, metrics[:500]
print(f"minimums: served a write (revision {revision}), streamed {kinds} and metrics")
PY
  echo "minimums: FAILED; the gateway's log:" >&2
  cat "$work/gateway.log" >&2
  exit 1
fi
