#!/usr/bin/env bash
# The Raspberry Pi build: cross-builds both binaries for a Pi and runs them under qemu-user
# against the host's real cargo: init, user and token, palletizer-server, cargo publish of
# the test crates, a build that resolves and downloads them through the sparse index, a
# fetch through the git index, graceful stop, check. Every downloaded crate file must equal
# the one published.
#
#   scripts/pi-smoke.sh                                         64-bit Pi OS, static binaries
#   PI_TARGET=armv7-unknown-linux-gnueabihf scripts/pi-smoke.sh 32-bit Pi OS (Pi 2 and later)
#   PI_LINK=dynamic scripts/pi-smoke.sh                         linked against the Pi's glibc
#   PI_SKIP_BUILD=1 scripts/pi-smoke.sh                         smoke-test the last build only
#   PI_KEEP=1 scripts/pi-smoke.sh                               keep the temp dir (registry, logs)
#
# Missing tools are installed when run as root (Debian: the cross gcc and libc, qemu-user;
# rustup: the Rust target), and the script says so; otherwise it prints the commands.
# Static binaries land in target/TARGET/release/ (the command the README gives for a small
# machine), dynamic ones in target/pi-dynamic/TARGET/release/ so neither rebuilds the other.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${PI_TARGET:-aarch64-unknown-linux-gnu}
LINK=${PI_LINK:-static}
START=$SECONDS

say() { printf '== %s\n' "$*"; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

case "$TARGET" in
  aarch64-unknown-linux-gnu)
    GNU=aarch64-linux-gnu QEMU=qemu-aarch64 MACHINE=183 DEBARCH=arm64 ;;
  armv7-unknown-linux-gnueabihf)
    GNU=arm-linux-gnueabihf QEMU=qemu-arm MACHINE=40 DEBARCH=armhf ;;
  *) die "PI_TARGET must be aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf, not $TARGET" ;;
esac
case "$LINK" in
  static) TARGET_DIR=$ROOT/target ;;
  dynamic) TARGET_DIR=$ROOT/target/pi-dynamic ;;
  *) die "PI_LINK must be static or dynamic, not $LINK" ;;
esac
SYSROOT=/usr/$GNU
BIN=$TARGET_DIR/$TARGET/release
ENVNAME=$(echo "$TARGET" | tr 'a-z-' 'A-Z_')
CCNAME=$(echo "$TARGET" | tr '-' '_')

# ---- Tools --------------------------------------------------------------------------------
T0=$SECONDS
pkgs=()
command -v "$GNU-gcc" >/dev/null || pkgs+=("gcc-$GNU")
[ -e "$SYSROOT/lib/libc.a" ] && [ -e "$SYSROOT/include/stdio.h" ] || pkgs+=("libc6-dev-$DEBARCH-cross")
command -v "$QEMU" >/dev/null || pkgs+=(qemu-user)
if [ ${#pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    die "missing ${pkgs[*]}: run as root, or: sudo apt-get install ${pkgs[*]}"
  fi
  say "installing ${pkgs[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" </dev/null >/dev/null
fi
if [ ! -d "$(rustc --print sysroot)/lib/rustlib/$TARGET" ]; then
  command -v rustup >/dev/null || die "the Rust standard library for $TARGET is missing and rustup is not installed"
  say "installing the Rust target $TARGET (rustup target add)"
  rustup target add "$TARGET"
fi
for tool in "$GNU-gcc" "$GNU-readelf" "$QEMU" cargo timeout sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is still missing"
done
T_TOOLS=$((SECONDS - T0))

# ---- Build --------------------------------------------------------------------------------
# Only the cross target's flags are set, through its own variables: build scripts and a
# normal host build keep theirs. git2 (libgit2) and ring compile C with cc-rs, which takes
# the compiler from CC_<target>.
T0=$SECONDS
if [ -z "${PI_SKIP_BUILD:-}" ]; then
  export "CARGO_TARGET_${ENVNAME}_LINKER=$GNU-gcc"
  export "CC_${CCNAME}=$GNU-gcc" "AR_${CCNAME}=$GNU-ar"
  if [ "$TARGET" = armv7-unknown-linux-gnueabihf ]; then
    # libgit2's own build defines this and libgit2-sys does not: without it its readdir
    # has a 32-bit d_off, which qemu-arm cannot fit ext4's 64-bit directory hashes into
    # (EOVERFLOW when opening the index repository).
    export "CFLAGS_${CCNAME}=-D_FILE_OFFSET_BITS=64"
  fi
  if [ "$LINK" = static ]; then
    export "CARGO_TARGET_${ENVNAME}_RUSTFLAGS=-C target-feature=+crt-static"
  else
    export "CARGO_TARGET_${ENVNAME}_RUSTFLAGS="
  fi
  say "building palletizer and palletizer-server for $TARGET ($LINK, release)"
  CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --locked --target "$TARGET" --bins
fi
T_BUILD=$((SECONDS - T0))
PAL=$BIN/palletizer
SRV=$BIN/palletizer-server
for b in "$PAL" "$SRV"; do
  [ -x "$b" ] || die "$b is missing: run without PI_SKIP_BUILD"
  # e_machine of the ELF header: a host binary here would prove nothing.
  [ "$(od -An -tu2 -j18 -N2 "$b" | tr -d ' ')" = "$MACHINE" ] || die "$b is not a $TARGET binary"
done
headers=$("$GNU-readelf" -lW "$PAL")
if grep -q 'Requesting program interpreter' <<<"$headers"; then
  glibc=$("$GNU-readelf" -VW "$PAL" | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -n 1)
  # build.rs asks for packed relative relocations; binutils before 2.41 ignore that on
  # aarch64 and arm, and the classic relocation records stay resident.
  relr=no
  grep -q '(RELR)' <<<"$("$GNU-readelf" -dW "$PAL")" && relr=yes
  KIND="dynamic, needs $glibc, relocations packed: $relr"
else
  KIND=static
fi
[ "$KIND" = static ] || [ "$LINK" = dynamic ] || die "$PAL was asked static but is $KIND"

# ---- Smoke test ---------------------------------------------------------------------------
T0=$SECONDS
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pi-smoke.XXXXXX")
SERVER_PID=
cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ $rc -ne 0 ] && [ -f "$WORK/server.log" ]; then
    echo "--- last lines of the server's log" >&2
    tail -n 20 "$WORK/server.log" >&2
  fi
  if [ -n "${PI_KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The dynamic build finds the Pi's loader and libc in the cross sysroot.
export QEMU_LD_PREFIX=$SYSROOT
pal() { timeout 120 "$QEMU" "$PAL" -r "$WORK/reg" "$@"; }

# A port nobody listens on (a hex port in state 0A = LISTEN in /proc/net/tcp*): the
# registry's URL is fixed at init, before the server binds.
listening=$(awk 'FNR > 1 && $4 == "0A" { split($2, a, ":"); print a[2] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null || true)
PORT=
for _ in $(seq 50); do
  p=$((20000 + RANDOM % 40000))
  grep -qx "$(printf '%04X' "$p")" <<<"$listening" || { PORT=$p; break; }
done
[ -n "$PORT" ] || die "found no free port"
URL=http://127.0.0.1:$PORT

say "palletizer init/user/token under $QEMU"
pal init --url "$URL" >/dev/null
pal user add admin --admin >/dev/null
TOKEN=$(pal token create --user admin --label pi-smoke 2>/dev/null)
[[ $TOKEN == pal_* ]] || die "token create printed no token"
printf 'registry = "reg"\n\n[[listener]]\nbind = "127.0.0.1:%s"\n' "$PORT" >"$WORK/server.toml"

say "palletizer-server under $QEMU on $URL"
"$QEMU" "$SRV" "$WORK/server.toml" >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 300); do
  grep -q '^listening on ' "$WORK/server.log" && break
  kill -0 "$SERVER_PID" 2>/dev/null || die "palletizer-server exited at start"
  sleep 0.1
done
grep -q "^listening on $URL" "$WORK/server.log" || die "palletizer-server did not listen on $URL within 30 s"
mem() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$SERVER_PID/status"; }
IDLE_RSS=$(mem VmRSS)

# The host's real cargo, with nothing of the user's: its own CARGO_HOME, no token from the
# environment, no proxy for loopback.
unset RUSTFLAGS CARGO_TARGET_DIR "CARGO_TARGET_${ENVNAME}_RUSTFLAGS" CARGO_BUILD_TARGET
unset CARGO_REGISTRIES_LOCAL_TOKEN CARGO_REGISTRIES_LOCAL_INDEX CARGO_REGISTRY_TOKEN
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
export CARGO_NET_RETRY=0 CARGO_TERM_COLOR=never CARGO_HTTP_TIMEOUT=60
SPARSE_HOME=$WORK/cargo-sparse GIT_HOME=$WORK/cargo-git
mkdir -p "$SPARSE_HOME" "$GIT_HOME" "$WORK/src"
printf '[registries.local]\nindex = "sparse+%s/index/"\n' "$URL" >"$SPARSE_HOME/config.toml"
printf '[registries.local]\nindex = "%s/index"\n' "$URL" >"$GIT_HOME/config.toml"
hcargo() { # hcargo CARGO_HOME DIR ARGS...
  local home=$1 dir=$2
  shift 2
  (cd "$dir" && CARGO_HOME=$home CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$WORK/target} timeout 300 cargo "$@")
}

# cargo publish keeps no copy of what it sent; cargo package makes the same bytes (checked
# below against the registry's file too) and keeps them in $WORK/pkg/package.
say "cargo package and publish leaf, ab, tgt, devonly, rich (sparse index)"
for c in leaf ab tgt devonly rich; do
  cp -r "tests/crates/$c" "$WORK/src/$c"
  CARGO_TARGET_DIR=$WORK/pkg hcargo "$SPARSE_HOME" "$WORK/src/$c" \
    package --registry local --no-verify --allow-dirty --quiet ||
    die "cargo package $c failed"
  CARGO_REGISTRIES_LOCAL_TOKEN=$TOKEN hcargo "$SPARSE_HOME" "$WORK/src/$c" \
    publish --registry local --no-verify --allow-dirty --quiet ||
    die "cargo publish $c failed"
done

say "cargo search and cargo build of a consumer (sparse index)"
found=$(hcargo "$SPARSE_HOME" "$WORK" search --registry local leaf 2>"$WORK/search.err") ||
  die "cargo search failed: $(cat "$WORK/search.err")"
grep -q '^leaf = "0.1.0"' <<<"$found" || die "cargo search did not find leaf: $found"
cp -r tests/crates/app "$WORK/app-sparse"
hcargo "$SPARSE_HOME" "$WORK/app-sparse" build --quiet || die "cargo build of the consumer failed"
out=$("$WORK/target/debug/app")
[ "$out" = "leaf 0.1.0 + ab + tgt" ] || die "the consumer printed '$out'"

say "cargo fetch of a consumer (git index)"
cp -r tests/crates/app "$WORK/app-git"
hcargo "$GIT_HOME" "$WORK/app-git" fetch --quiet || die "cargo fetch through the git index failed"
grep -q 'POST /index/git-upload-pack 200' "$WORK/server.log" || die "cargo did not fetch the git index"

# What cargo downloaded, through either index, is byte for byte what it published.
checked=0
for home in "$SPARSE_HOME" "$GIT_HOME"; do
  for c in leaf-0.1.0 ab-1.0.0 tgt-0.3.0 rich-0.2.0; do
    got=$(find "$home/registry/cache" -name "$c.crate" | head -n 1)
    [ -n "$got" ] || die "cargo did not download $c.crate into $home"
    cmp -s "$got" "$WORK/pkg/package/$c.crate" || die "$got differs from the published $c.crate"
    name=${c%-*}
    cmp -s "$got" "$WORK/reg/crates/$name/$c.crate" || die "$got differs from the registry's $c.crate"
    checked=$((checked + 1))
  done
done
HWM=$(mem VmHWM)
RSS=$(mem VmRSS)

say "SIGTERM, then palletizer check and list"
kill -TERM "$SERVER_PID"
for _ in $(seq 300); do
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$SERVER_PID" 2>/dev/null && die "palletizer-server still runs 30 s after SIGTERM"
rc=0
wait "$SERVER_PID" || rc=$?
SERVER_PID=
[ $rc -eq 0 ] || die "palletizer-server exited with $rc after SIGTERM"
pal check >/dev/null || die "palletizer check failed"
listed=$(pal list | wc -l)
[ "$listed" -ge 5 ] || die "palletizer list shows $listed lines, expected the 5 crates"
T_SMOKE=$((SECONDS - T0))

kib() { echo $(($(stat -c %s "$1") / 1024)); }
requests=$(grep -c ' GET \| PUT \| POST ' "$WORK/server.log" || true)
cat <<EOF

Raspberry Pi smoke test passed: $TARGET, $KIND
| what | value |
|---|---|
| palletizer | $(kib "$PAL") KiB |
| palletizer-server | $(kib "$SRV") KiB |
| crates published / downloads compared (sparse + git) | 5 / $checked, all equal |
| requests the server logged | $requests |
| server under $QEMU: VmRSS idle / after / VmHWM | $IDLE_RSS / $RSS / $HWM KiB (qemu's, not a Pi's) |
| time: tools / build / smoke / total | ${T_TOOLS} s / ${T_BUILD} s / ${T_SMOKE} s / $((SECONDS - START)) s |
EOF
