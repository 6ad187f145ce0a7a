#!/usr/bin/env bash
# What access control costs: idle memory with 1,000 tokens against a registry with one, and
# system calls per request with the token check (private mode) against none (open mode).
#
#   cargo build --release && benches/auth.sh        (needs curl and strace)
#
# Prints one table; writes it to target/bench-auth.md too.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BENCH_BIN_DIR:-target/release}
PAL="$BIN/palletizer"
SRV="$BIN/palletizer-server"
REQUESTS=${BENCH_REQUESTS:-2000}
TOKENS=${BENCH_TOKENS:-1000}
for tool in curl strace; do
  command -v "$tool" >/dev/null || { echo "error: $tool is needed" >&2; exit 1; }
done
[ -x "$SRV" ] || { echo "error: build first: cargo build --release" >&2; exit 1; }
WORK=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# make NAME ACCESS TOKENS: a registry with one admin and TOKENS tokens; prints the first.
make_registry() {
  local dir="$WORK/$1" port
  port=$(free_port)
  "$PAL" -r "$dir" init --url "http://127.0.0.1:$port" --access "$2" >/dev/null
  "$PAL" -r "$dir" user add admin --admin >/dev/null
  printf '[[listener]]\nbind = "127.0.0.1:%s"\n' "$port" >"$dir/server.toml"
  local first
  first=$("$PAL" -r "$dir" token create --user admin 2>/dev/null)
  for ((i = 1; i < $3; i++)); do
    "$PAL" -r "$dir" token create --user admin --label "t$i" >/dev/null 2>&1
  done
  echo "$first"
}

# start NAME: runs the server, waits for its first answer; prints "PID PORT".
start() {
  local dir="$WORK/$1" port
  port=$(sed -n 's/.*127.0.0.1:\([0-9]*\).*/\1/p' "$dir/server.toml")
  "$SRV" "$dir/server.toml" -q >/dev/null 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/login" && break
    sleep 0.05
  done
  echo "$pid $port"
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
anon_kib() { awk '/^RssAnon/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

# syscalls PID PORT TOKEN: system calls the server makes for REQUESTS keep-alive GETs.
syscalls() {
  local urls=() hdr=()
  for ((i = 0; i < REQUESTS; i++)); do urls+=("http://127.0.0.1:$2/index/config.json"); done
  [ -n "$3" ] && hdr=(-H "Authorization: $3")
  strace -c -f -p "$1" -o "$WORK/strace.$1" &
  local st=$!
  sleep 0.5
  curl -s "${hdr[@]}" "${urls[@]}" >/dev/null
  sleep 0.2
  kill -INT "$st"
  wait "$st" 2>/dev/null || true
  awk '/^100.00/ {print $4}' "$WORK/strace.$1"
}

one=$(make_registry one private 1)
many=$(make_registry many private "$TOKENS")
make_registry open open 1 >/dev/null
read -r p1 port1 < <(start one)
read -r pm portm < <(start many)
read -r po porto < <(start open)
for p in "$port1" "$portm"; do
  curl -s -o /dev/null -H "Authorization: $one" "http://127.0.0.1:$p/index/config.json"
done
curl -s -o /dev/null -H "Authorization: $many" "http://127.0.0.1:$portm/index/config.json"
sleep 1
r1=$(rss_kib "$p1"); rm_=$(rss_kib "$pm")
a1=$(anon_kib "$p1"); am=$(anon_kib "$pm")
s_open=$(syscalls "$po" "$porto" "")
s_priv=$(syscalls "$pm" "$portm" "$many")
status_many=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: $many" "http://127.0.0.1:$portm/index/config.json")
status_none=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$portm/index/config.json")
{
  echo "| measure | value |"
  echo "|---|---|"
  echo "| idle VmRSS (of it anonymous), private registry with 1 token | $r1 KiB ($a1 KiB) |"
  echo "| idle VmRSS (of it anonymous), private registry with $TOKENS tokens | $rm_ KiB ($am KiB): $((rm_ - r1)) KiB more ($((am - a1)) KiB anonymous) |"
  echo "| VmHWM with $TOKENS tokens after the syscall run | $(hwm_kib "$pm") KiB |"
  echo "| system calls for $REQUESTS keep-alive GETs, open mode (no check) | $s_open |"
  echo "| system calls for $REQUESTS keep-alive GETs, private mode (token checked) | $s_priv |"
  echo "| status with the token / without (private) | $status_many / $status_none |"
} | tee target/bench-auth.md
