#!/usr/bin/env bash
# The warm mirror against the registry's own files, on the load bench's terms: the same
# index file and the same crate file served by one server from its own index (`/index/`,
# `/crates/`) and from its warm crates.io mirror (`/mirror/index/`, the mirror's `dl`),
# wrk -t1 -c10, interleaved rounds, medians. The upstream is a local sparse tree (Python's
# HTTP server) holding the crate the registry publishes, byte for byte.
#
#   benches/mirror-load.sh [BIN_DIR]      (default target/release; needs wrk, curl, python3)
#
# MIRROR_LOAD_ROUNDS (default 3) rounds, MIRROR_LOAD_SECONDS (default 3) per path. Writes
# the table to target/bench-mirror-load.md too.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release}")
ROUNDS=${MIRROR_LOAD_ROUNDS:-3}
SECS=${MIRROR_LOAD_SECONDS:-3}
for tool in wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is needed" >&2; exit 1; }
done
[ -x "$BIN/palletizer-server" ] || { echo "error: no server in $BIN (cargo build --release)" >&2; exit 1; }
work=$(mktemp -d -t mirror-load.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port) up=$(free_port)
# A crate of about 30 KiB, as in the load bench's crate-file path.
python3 - "$work" <<'PY'
import gzip, io, os, sys, tarfile
work = sys.argv[1]
manifest = (b'[package]\nname = "warmcrate"\nversion = "1.0.0"\nedition = "2021"\n'
            b'description = "d"\nlicense = "MIT"\n')
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w") as t:
    for path, data in [("Cargo.toml", manifest), ("src/lib.rs", os.urandom(30000).hex()[:30000].encode())]:
        info = tarfile.TarInfo(f"warmcrate-1.0.0/{path}"); info.size = len(data)
        t.addfile(info, io.BytesIO(data))
open(f"{work}/warmcrate-1.0.0.crate", "wb").write(gzip.compress(raw.getvalue(), mtime=0))
PY
"$BIN/palletizer" -r "$work/reg" init --url "http://127.0.0.1:$port" --access open >/dev/null
"$BIN/palletizer" -r "$work/reg" add "$work/warmcrate-1.0.0.crate" >/dev/null
# The upstream: the registry's own index file and crate file under crates.io's layout.
mkdir -p "$work/up/wa/rm" "$work/up/dl/warmcrate"
cp "$work/reg/index/wa/rm/warmcrate" "$work/up/wa/rm/warmcrate"
cp "$work/reg/crates/warmcrate/warmcrate-1.0.0.crate" "$work/up/dl/warmcrate/"
printf '{"dl":"http://127.0.0.1:%s/dl/{crate}/{crate}-{version}.crate"}\n' "$up" >"$work/up/config.json"
(cd "$work/up" && exec python3 -m http.server "$up" --bind 127.0.0.1 >/dev/null 2>&1) &
cat >>"$work/reg/palletizer.toml" <<EOF

[mirror]
upstream = "sparse+http://127.0.0.1:$up/"
ttl = "1h"
EOF
printf 'registry = "%s"\n[[listener]]\nbind = "127.0.0.1:%s"\n' "$work/reg" "$port" >"$work/server.toml"
"$BIN/palletizer-server" "$work/server.toml" -q &
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$port/index/config.json" && break; sleep 0.05; done
base="http://127.0.0.1:$port"
mirror_dl=$(curl -fs "$base/mirror/index/config.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["dl"])')
mirror_crate=$(python3 -c 'import sys; d=sys.argv[1]; print(d.replace("{crate}","warmcrate").replace("{version}","1.0.0") if "{" in d else d.rstrip("/")+"/warmcrate/1.0.0/download")' "$mirror_dl")
own_dl=$(curl -fs "$base/index/config.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["dl"])')
own_crate=$(python3 -c 'import sys; d=sys.argv[1]; print(d.replace("{crate}","warmcrate").replace("{version}","1.0.0") if "{" in d else d.rstrip("/")+"/warmcrate/1.0.0/download")' "$own_dl")
# Warm the mirror, and check both serve the same bytes.
for pair in "$base/index/wa/rm/warmcrate $base/mirror/index/wa/rm/warmcrate" "$own_crate $mirror_crate"; do
  set -- $pair
  a=$(curl -fs "$1" | sha256sum) b=$(curl -fs "$2" | sha256sum)
  [ "$a" = "$b" ] || { echo "error: $1 and $2 differ" >&2; exit 1; }
done
rps() { wrk -t1 -c10 -d"${SECS}s" "$1" | awk '/^Requests\/sec/ {print $2}'; }
results=$(
  for r in $(seq "$ROUNDS"); do
    echo "index_own $(rps "$base/index/wa/rm/warmcrate")"
    echo "index_mirror $(rps "$base/mirror/index/wa/rm/warmcrate")"
    echo "crate_own $(rps "$own_crate")"
    echo "crate_mirror $(rps "$mirror_crate")"
  done
)
python3 - "$ROUNDS" "$SECS" <<PY | tee target/bench-mirror-load.md
import statistics, sys
rows = {}
for line in """$results""".split("\n"):
    k, v = line.split()
    rows.setdefault(k, []).append(float(v))
med = {k: statistics.median(v) for k, v in rows.items()}
print(f"Medians of {sys.argv[1]} interleaved rounds, wrk -t1 -c10, {sys.argv[2]} s per path; one index file, one 30 KiB crate file, warm mirror")
print()
print("| path | own req/s | mirror req/s | mirror / own |")
print("|---|---|---|---|")
for what in ["index", "crate"]:
    o, m = med[f"{what}_own"], med[f"{what}_mirror"]
    print(f"| {what} file | {o:,.0f} | {m:,.0f} | {m / o:.3f} |")
PY
