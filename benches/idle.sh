#!/usr/bin/env bash
# Idle memory of palletizer-server: VmRSS after it listens and has answered one index
# request, several interleaved starts per binary, medians; with a breakdown of where the
# resident pages are (the binary's text, its data, heap, thread stacks, other anonymous).
#
#   benches/idle.sh LABEL=BINARY [LABEL=BINARY]...      (needs curl and python3)
#
# For example, the static build against an older copy of it:
#   RUSTFLAGS="-C target-feature=+crt-static" cargo build --release \
#     --target x86_64-unknown-linux-gnu --bin palletizer-server --bin palletizer
#   benches/idle.sh before=/tmp/palletizer-server.old \
#     after=target/x86_64-unknown-linux-gnu/release/palletizer-server
#
# The server gives back the code pages its last requests ran once it has had no connection
# for a second; IDLE_WAIT (default 3) is the seconds waited after the request before
# measuring (IDLE_WAIT=0.2 shows the memory before that). IDLE_ROUNDS (default 7) starts per
# binary; IDLE_CLI the `palletizer` used to make the registry (default: next to the first
# binary). Writes the tables to target/bench-idle.md too.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${IDLE_ROUNDS:-7}
WAIT=${IDLE_WAIT:-3}
[ $# -ge 1 ] || { sed -n '2,15p' "$0" >&2; exit 1; }
for tool in curl python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is needed" >&2; exit 1; }
done
LABELS=() BINS=()
for arg in "$@"; do
  LABELS+=("${arg%%=*}") BINS+=("${arg#*=}")
  [ -x "${arg#*=}" ] || { echo "error: ${arg#*=} is not an executable" >&2; exit 1; }
done
PAL=${IDLE_CLI:-$(dirname "${BINS[0]}")/palletizer}
[ -x "$PAL" ] || { echo "error: no palletizer CLI at $PAL (set IDLE_CLI)" >&2; exit 1; }
WORK=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG="$WORK/reg"
"$PAL" -r "$REG" init --url "http://127.0.0.1:$PORT" --access open >/dev/null
# A few small crates, so the index request reads a real index file.
python3 - "$WORK" <<'EOF'
import io, sys, tarfile
for i in range(5):
    name = f"idle-{i}"
    toml = (f'[package]\nname = "{name}"\nversion = "1.0.0"\nedition = "2021"\n'
            'description = "idle bench"\nlicense = "MIT"\n').encode()
    with tarfile.open(f"{sys.argv[1]}/{name}-1.0.0.crate", "w:gz") as t:
        for path, data in ((f"{name}-1.0.0/Cargo.toml", toml), (f"{name}-1.0.0/src/lib.rs", b"")):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
EOF
"$PAL" -r "$REG" add "$WORK"/*.crate >/dev/null
printf 'registry = "%s"\n\n[[listener]]\nbind = "127.0.0.1:%s"\n' "$REG" "$PORT" >"$WORK/server.toml"

# measure N BINARY: starts it, one index request, WAIT seconds' rest; saves the status and
# smaps, stops it.
measure() {
  "$2" "$WORK/server.toml" -q >/dev/null 2>"$WORK/err.$1" &
  PID=$!
  local ok=
  for _ in $(seq 200); do
    if curl -sf -o /dev/null "http://127.0.0.1:$PORT/index/id/le/idle-0"; then ok=1; break; fi
    sleep 0.05
  done
  [ -n "$ok" ] || { echo "error: $2 did not answer:" >&2; cat "$WORK/err.$1" >&2; exit 1; }
  sleep "$WAIT"
  cp "/proc/$PID/status" "$WORK/status.$1"
  cp "/proc/$PID/smaps" "$WORK/smaps.$1"
  kill "$PID"
  wait "$PID" 2>/dev/null || true
  PID=
}

for ((r = 0; r < ROUNDS; r++)); do
  for i in "${!BINS[@]}"; do
    measure "$i.$r" "$(realpath "${BINS[$i]}")"
  done
done

# One table of medians over the rounds, then the per-mapping breakdown of the median run.
ARGS=()
for i in "${!BINS[@]}"; do ARGS+=("${LABELS[$i]}" "$(realpath "${BINS[$i]}")"); done
python3 - "$WORK" "$ROUNDS" "$WAIT" "${ARGS[@]}" <<'EOF' | tee target/bench-idle.md
import os, re, statistics, sys
work, rounds, wait = sys.argv[1], int(sys.argv[2]), sys.argv[3]
labels, bins = sys.argv[4::2], sys.argv[5::2]

def status(path):
    out = {}
    for line in open(path):
        k, _, v = line.partition(":")
        if v.strip().endswith("kB"):
            out[k] = int(v.split()[0])
    return out

def smaps(path, binary):
    """Resident KiB per kind of mapping, and the anonymous mappings one by one."""
    kinds, anon, cur = {}, [], None
    for line in open(path):
        f = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            perms, name = f[1], (f[5] if len(f) > 5 else "")
            if name == binary:
                kind = "binary text (r-x)" if "x" in perms else f"binary {'data (rw-)' if 'w' in perms else 'read-only data (r--)'}"
            elif name in ("[heap]", "[stack]"):
                kind = f"{name} (main heap / main stack)" if name == "[heap]" else "[stack] (main thread)"
            elif name.startswith("["):
                kind = name
            elif name:
                kind = "other files"
            else:
                kind = "anonymous"
            cur = [kind, hi - lo, perms, 0]
            if kind == "anonymous":
                anon.append(cur)
        elif f[0] == "Rss:":
            cur[3] = int(f[1])
            kinds[cur[0]] = kinds.get(cur[0], 0) + int(f[1])
    return kinds, anon

print(f"Idle palletizer-server {wait} s after one index request, {rounds} interleaved starts each (KiB, medians)\n")
print("| build | VmRSS | RssAnon | RssFile | VmHWM | VmRSS per start |")
print("|---|---|---|---|---|---|")
medians = {}
for i, label in enumerate(labels):
    runs = [status(f"{work}/status.{i}.{r}") for r in range(rounds)]
    med = lambda k: int(statistics.median(s[k] for s in runs))
    rss = [s["VmRSS"] for s in runs]
    medians[i] = min(range(rounds), key=lambda r: abs(rss[r] - statistics.median(rss)))
    print(f"| {label} | {med('VmRSS')} | {med('RssAnon')} | {med('RssFile')} | {med('VmHWM')} | {' '.join(map(str, rss))} |")
for i, label in enumerate(labels):
    r = medians[i]
    kinds, anon = smaps(f"{work}/smaps.{i}.{r}", bins[i])
    print(f"\n`{label}` by mapping (start {r + 1}, Rss KiB):\n")
    print("| mapping | Rss |")
    print("|---|---|")
    for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v} |")
    print("\nanonymous mappings (size KiB, perms, Rss KiB): " +
          ", ".join(f"{size // 1024} {perms} {rss}" for _, size, perms, rss in anon if rss))
EOF
