#!/usr/bin/env bash
# What serving docs costs beside serving index files, in one run on one server.
#
#   benches/docs.sh [PATH/TO/palletizer-server]   (default: target/release/palletizer-server)
#
# Makes a registry with one crate whose 1.0.0 has docs (`palletizer docs add`: a crate page
# of about 30 KiB, like a rustdoc module page, and a 200 KiB script like rustdoc's
# search.js), then, $ROUNDS times (default 3), interleaved on the same server, wrk -t1
# -c10 for $SECS s (default 3) on: an index file, the crate file (about 30 KiB, sent like
# docs files), the docs page, the docs script. Prints the
# medians (requests/s, and the server's CPU µs per request) as a Markdown table. Needs wrk,
# curl and python3; 127.0.0.1 only.
set -euo pipefail
ROUNDS=${ROUNDS:-3}; SECS=${SECS:-3}
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../target/release/palletizer-server}
cli="$(dirname "$bin")/palletizer"
work=$(mktemp -d -t docs-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=19700
"$cli" -r "$work/reg" init --url "http://127.0.0.1:$port" --access open >/dev/null
python3 - "$work" <<'PY'
import gzip, io, os, sys, tarfile
work = sys.argv[1]
manifest = (b'[package]\nname = "bench-docs"\nversion = "1.0.0"\nedition = "2021"\n'
            b'description = "docs bench"\nlicense = "MIT"\n')
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w") as t:
    # Incompressible bytes: a crate file about as large as the docs page.
    for path, data in [("Cargo.toml", manifest), ("src/lib.rs", b"pub fn f() {}\n"),
                       ("data.bin", os.urandom(30 * 1024))]:
        info = tarfile.TarInfo(f"bench-docs-1.0.0/{path}"); info.size = len(data)
        t.addfile(info, io.BytesIO(data))
open(f"{work}/bench-docs-1.0.0.crate", "wb").write(gzip.compress(raw.getvalue(), mtime=0))
doc = f"{work}/doc"
os.makedirs(f"{doc}/bench_docs"); os.makedirs(f"{doc}/static.files")
item = '<dt><a class="fn" href="fn.f{0}.html">f{0}</a></dt><dd>Does thing {0} to the pallets.</dd>\n'
page = "<!DOCTYPE html><html><head><title>bench_docs - Rust</title></head><body><dl>" + \
    "".join(item.format(i) for i in range(300)) + "</dl></body></html>"
open(f"{doc}/bench_docs/index.html", "w").write(page)
open(f"{doc}/static.files/search-0123.js", "w").write("/* search */ " + "x" * (200 * 1024))
PY
"$cli" -r "$work/reg" add "$work/bench-docs-1.0.0.crate" >/dev/null
"$cli" -r "$work/reg" docs add bench-docs 1.0.0 "$work/doc" >/dev/null
cat > "$work/server.toml" <<CONF
registry = "$work/reg"
[[listener]]
bind = "127.0.0.1:$port"
[limits]
requests-per-second = 100000000
request-burst = 100000000
CONF
"$bin" "$work/server.toml" -q & pid=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/index/config.json" && break; sleep 0.05; done
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
declare -A paths=(
  [index]="/index/be/nc/bench-docs"
  [crate file]="/crates/bench-docs/bench-docs-1.0.0.crate"
  [docs page]="/docs/bench-docs/1.0.0/bench_docs/index.html"
  [docs script]="/docs/bench-docs/1.0.0/static.files/search-0123.js"
)
for p in "${paths[@]}"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port$p")
  [ "$code" = 200 ] || { echo "GET $p: $code" >&2; exit 1; }
done
results=$work/results.tsv
for round in $(seq "$ROUNDS"); do
  for name in "index" "crate file" "docs page" "docs script"; do
    before=$(ticks)
    out=$(wrk -t1 -c10 -d"${SECS}s" "http://127.0.0.1:$port${paths[$name]}" 2>&1)
    after=$(ticks)
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rps" "$reqs" "$(( (after - before) ))" "${non2xx:-0}" >> "$results"
  done
done
python3 - "$results" "$hz" "$ROUNDS" "$SECS" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
hz = int(sys.argv[2])
print(f"one server, wrk -t1 -c10, {sys.argv[4]} s per path, median of {sys.argv[3]} interleaved rounds")
print("\n| path | requests/s | server CPU µs per request | non-2xx |")
print("|---|---|---|---|")
for name in dict.fromkeys(r[0] for r in rows):
    rs = [r for r in rows if r[0] == name]
    rps = statistics.median(float(r[1]) for r in rs)
    cpu = statistics.median(int(r[3]) / hz * 1e6 / int(r[2]) for r in rs)
    print(f"| {name} | {rps:,.0f} | {cpu:.1f} | {max(int(r[4]) for r in rs)} |")
PY
