#!/usr/bin/env bash
# Checks the Debian packages end to end (opt-in: needs root and debootstrap, and takes a
# few minutes; not part of .ci/run):
#
#   1. scripts/deb.sh for amd64, arm64 and armhf;
#   2. a minimal Debian chroot (debootstrap --variant=minbase), `dpkg -i` of the amd64
#      package with nothing else installed: no dependency may be missing;
#   3. the unit's ExecStartPre and ExecStart, read from the installed unit, run in the
#      chroot as its user (setpriv, no new privileges, its umask) on the shipped
#      /etc/palletizer/server.toml with only the port changed: the first start creates the
#      registry and prints the admin token once, /index/config.json is served, the token
#      is an admin's, SIGHUP keeps it serving, SIGTERM stops it cleanly; the second start
#      prints no token and serves the same registry;
#   4. a reinstall keeps the edited conffile; a purge keeps the registry;
#   5. systemd installed in the chroot: the package again, its user now made by
#      systemd-sysusers, and `systemd-analyze verify` (and `security`) of palletizer.service;
#   6. the arm64 and armhf binaries from their packages, under qemu-user: first start
#      and a served config.json;
#   7. a Debian with systemd booted in systemd-nspawn: the unit enabled by postinst runs
#      under its whole sandbox, is restarted and reloaded, and its journal holds the token
#      once (DEB_CHECK_BOOT=0 leaves this out).
#
#   scripts/deb-check.sh
#   DEB_CHECK_SKIP_BUILD=1 scripts/deb-check.sh     check the packages already built
#   DEB_CHECK_SUITE=bookworm scripts/deb-check.sh   another Debian release (default: stable)
#   DEB_CHECK_KEEP=1 scripts/deb-check.sh           keep the chroot and logs
#
# Downloads for the chroot are kept in /var/cache/palletizer-deb-check for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SUITE=${DEB_CHECK_SUITE:-stable}
MIRROR=${DEB_CHECK_MIRROR:-http://deb.debian.org/debian}
CACHE=/var/cache/palletizer-deb-check
START=$SECONDS

say() { printf '== %s\n' "$*"; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}
elapsed() { echo "$((SECONDS - $1)) s"; }
machine() { readelf -h "$1" | sed -n 's/^ *Machine: *//p'; }

[ "$(id -u)" = 0 ] || die "run as root: it makes a chroot and runs the package's scripts in it"
pkgs=()
command -v debootstrap >/dev/null || pkgs+=(debootstrap)
command -v qemu-aarch64 >/dev/null && command -v qemu-arm >/dev/null || pkgs+=(qemu-user)
command -v systemd-analyze >/dev/null || pkgs+=(systemd)
command -v curl >/dev/null || pkgs+=(curl)
if [ ${#pkgs[@]} -gt 0 ]; then
  say "installing ${pkgs[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" </dev/null >/dev/null
fi

VERSION=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
deb_of() { echo "$ROOT/target/debian/palletizer_${VERSION}_$1.deb"; }

# ---- 1. Build -----------------------------------------------------------------------------
T0=$SECONDS
for target in x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
  if [ -n "${DEB_CHECK_SKIP_BUILD:-}" ]; then
    DEB_SKIP_BUILD=1 scripts/deb.sh "$target"
  else
    scripts/deb.sh "$target"
  fi
done
T_BUILD=$(elapsed "$T0")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/deb-check.XXXXXX")
CH=$WORK/chroot
SERVER_PID=
cleanup() {
  local rc=$?
  # A server, or the timeout around the container (which hands TERM on to it).
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  mountpoint -q "$CH/proc" && umount "$CH/proc"
  if [ $rc -ne 0 ]; then
    for f in "$WORK"/*.log; do
      [ -f "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }
    done
  fi
  if [ -n "${DEB_CHECK_KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 2. A clean chroot and dpkg -i ----------------------------------------------------------
T0=$SECONDS
say "debootstrap --variant=minbase $SUITE"
mkdir -p "$CACHE"
debootstrap --variant=minbase --cache-dir="$CACHE" "$SUITE" "$CH" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
  die "debootstrap failed (see $WORK/debootstrap.log)"
mount -t proc proc "$CH/proc"
T_CHROOT=$(elapsed "$T0")
in_chroot() { chroot "$CH" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

T0=$SECONDS
say "dpkg -i palletizer_${VERSION}_amd64.deb in $(. "$CH/etc/os-release" && echo "$PRETTY_NAME")"
cp "$(deb_of amd64)" "$CH/tmp/palletizer.deb"
in_chroot dpkg -i /tmp/palletizer.deb 2>&1 | tee "$WORK/dpkg.log"
[ "$(in_chroot dpkg-query -W -f '${db:Status-Status}' palletizer)" = installed ] ||
  die "palletizer is not installed after dpkg -i (a missing dependency?)"
in_chroot getent passwd palletizer || die "the package made no palletizer user"
in_chroot ls -ld /var/lib/palletizer
for b in palletizer palletizer-server; do
  if readelf -lW "$CH/usr/bin/$b" | grep -q 'program interpreter' || readelf -dW "$CH/usr/bin/$b" | grep -q NEEDED; then
    die "/usr/bin/$b links shared libraries"
  fi
  echo "/usr/bin/$b: $(machine "$CH/usr/bin/$b"), no program interpreter, no shared library"
done

# ---- 3. Two starts, the way the unit runs them ------------------------------------------------
listening=$(awk 'FNR > 1 && $4 == "0A" { split($2, a, ":"); print a[2] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null || true)
PORT=
for _ in $(seq 50); do
  p=$((20000 + RANDOM % 40000))
  grep -qx "$(printf '%04X' "$p")" <<<"$listening" || { PORT=$p; break; }
done
[ -n "$PORT" ] || die "found no free port"
sed -i "s/^bind = \"0.0.0.0:8080\"/bind = \"0.0.0.0:$PORT\"/" "$CH/etc/palletizer/server.toml"
grep -q "^bind = \"0.0.0.0:$PORT\"" "$CH/etc/palletizer/server.toml" || die "the shipped server.toml has no bind = \"0.0.0.0:8080\""

# The commands as the unit gives them (one line each), as User= with NoNewPrivileges= and
# UMask= from the unit; the environment a system service gets.
UNIT=$CH/usr/lib/systemd/system/palletizer.service
unit_value() { sed -n "s/^$1=//p" "$UNIT" | head -n 1; }
PRE=$(unit_value ExecStartPre)
MAIN=$(unit_value ExecStart)
MASK=$(unit_value UMask)
[ "$(unit_value User)" = palletizer ] || die "the unit does not run as palletizer"
unit_cmd() { # unit_cmd COMMAND-LINE: sets CMD to run it the unit's way
  CMD=(chroot "$CH" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/var/lib/palletizer
    USER=palletizer LOGNAME=palletizer
    setpriv --reuid=palletizer --regid=palletizer --init-groups --no-new-privs --inh-caps=-all
    /bin/sh -c "umask $MASK; exec $1")
}
as_unit() {
  unit_cmd "$1"
  "${CMD[@]}"
}
start() { # start N: ExecStartPre, then ExecStart in the background until it listens
  as_unit "$PRE" >"$WORK/pre$1.out" 2>"$WORK/pre$1.log" || die "ExecStartPre failed on start $1"
  unit_cmd "$MAIN"
  "${CMD[@]}" >"$WORK/server$1.out" 2>"$WORK/server$1.log" &
  SERVER_PID=$!
  for _ in $(seq 100); do
    grep -q '^listening on ' "$WORK/server$1.log" && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || die "palletizer-server exited at start $1"
    sleep 0.1
  done
  die "palletizer-server did not listen within 10 s"
}
stop() {
  kill -TERM "$SERVER_PID"
  local rc=0
  wait "$SERVER_PID" || rc=$?
  SERVER_PID=
  [ $rc -eq 0 ] || die "palletizer-server exited with $rc after SIGTERM"
}
tokens_printed() { cat "$WORK/pre$1.out" "$WORK/server$1.out" | grep -c '| cargo login --registry palletizer' || true; }

say "first start: $PRE; $MAIN (as palletizer, port $PORT)"
start 1
sed 's/pal_[A-Za-z0-9_]*/pal_…/' "$WORK/pre1.out"
head -n 1 "$WORK/server1.log"
[ "$(tokens_printed 1)" = 1 ] || die "the first start printed $(tokens_printed 1) token lines, not 1"
TOKEN=$(grep -o 'pal_[A-Za-z0-9_]*' "$WORK/pre1.out" | head -n 1)
config=$(curl -fsS "http://127.0.0.1:$PORT/index/config.json")
echo "GET /index/config.json: $config"
# The URL first-start chose: this machine's name (the chroot has no avahi-daemon).
grep -q "\"dl\": *\"http://$(uname -n):$PORT/" <<<"$config" || die "config.json has not the URL http://$(uname -n):$PORT"
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
[ "$(code "http://127.0.0.1:$PORT/metrics")" != 200 ] || die "/metrics answered without a token"
[ "$(code -H "Authorization: $TOKEN" "http://127.0.0.1:$PORT/metrics")" = 200 ] ||
  die "/metrics refused the printed token: it is not an admin's"
echo "GET /metrics: $(code "http://127.0.0.1:$PORT/metrics") without a token, 200 with the printed one (an admin's)"
kill -HUP "$SERVER_PID"
sleep 0.5
[ "$(code "http://127.0.0.1:$PORT/index/config.json")" = 200 ] || die "not serving after SIGHUP"
echo "SIGHUP (ExecReload): still serving"
stop
echo "SIGTERM: exit 0"

say "second start"
start 2
[ ! -s "$WORK/pre2.out" ] || die "ExecStartPre printed something on the second start: $(cat "$WORK/pre2.out")"
[ "$(tokens_printed 2)" = 0 ] || die "the second start printed a token"
[ "$(curl -fsS "http://127.0.0.1:$PORT/index/config.json")" = "$config" ] || die "the second start serves another config.json"
echo "no token printed, same config.json served"
stop
others=$(find "$CH/var/lib/palletizer" ! -user "$(in_chroot id -u palletizer)" | head -n 3)
[ -z "$others" ] || die "files in the registry not owned by palletizer: $others"
as_unit "/usr/bin/palletizer -r /var/lib/palletizer token list" | tee "$WORK/tokens.out"
[ "$(grep -c first-start "$WORK/tokens.out")" = 1 ] || die "token list does not show the one first-start token"

# ---- 4. Reinstall and purge ---------------------------------------------------------------------
say "dpkg -i again (the edited conffile stays), then dpkg --purge (the registry stays)"
in_chroot dpkg -i /tmp/palletizer.deb >"$WORK/reinstall.log" 2>&1 || die "the reinstall failed"
grep -q "^bind = \"0.0.0.0:$PORT\"" "$CH/etc/palletizer/server.toml" || die "the reinstall replaced the edited server.toml"
in_chroot dpkg --purge palletizer >"$WORK/purge.log" 2>&1 || die "the purge failed"
[ ! -e "$CH/usr/bin/palletizer-server" ] && [ ! -e "$CH/etc/palletizer/server.toml" ] || die "the purge left the package's files"
[ -e "$CH/var/lib/palletizer/palletizer.toml" ] || die "the purge removed the registry"
echo "reinstall kept server.toml; purge removed the files and kept /var/lib/palletizer"
T_INSTALL=$(elapsed "$T0")

# ---- 5. With systemd: the user from sysusers.d, systemd-analyze ---------------------------------
# Only now, so that the install above ran on minbase alone.
T0=$SECONDS
say "apt-get install systemd in the chroot; the user again, from systemd-sysusers"
in_chroot sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd' \
  </dev/null >"$WORK/systemd.log" 2>&1 || die "apt-get install systemd in the chroot failed"
in_chroot userdel palletizer
in_chroot dpkg -i /tmp/palletizer.deb >"$WORK/reinstall2.log" 2>&1 || die "the install with systemd failed"
in_chroot getent passwd palletizer || die "systemd-sysusers made no palletizer user"
say "systemd-analyze verify palletizer.service ($(in_chroot systemd-analyze --version | head -n 1))"
UNIT_PATH=/usr/lib/systemd/system/palletizer.service
in_chroot systemd-analyze verify "$UNIT_PATH" >"$WORK/verify.log" 2>&1 ||
  die "systemd-analyze verify failed: $(cat "$WORK/verify.log")"
[ ! -s "$WORK/verify.log" ] || die "systemd-analyze verify: $(cat "$WORK/verify.log")"
echo "verify: exit 0, nothing printed"
# systemd-analyze security rates the sandbox (0 best, 10 worst); shown, not judged.
in_chroot systemd-analyze security --offline=true "$UNIT_PATH" 2>&1 | tail -n 1
T_SYSTEMD=$(elapsed "$T0")

# ---- 6. The ARM packages under qemu-user -------------------------------------------------------
T0=$SECONDS
for arch in arm64 armhf; do
  qemu=qemu-aarch64
  [ "$arch" = armhf ] && qemu=qemu-arm
  say "palletizer_${VERSION}_$arch.deb under $qemu"
  x=$WORK/$arch
  dpkg-deb -x "$(deb_of "$arch")" "$x"
  printf '#!/bin/sh\nexec %s %s "$@"\n' "$qemu" "$x/usr/bin/palletizer" >"$x/pal"
  chmod +x "$x/pal"
  printf 'registry = "reg"\n\n[[listener]]\nbind = "127.0.0.1:%s"\n' "$PORT" >"$x/server.toml"
  PALLETIZER=$x/pal "$x/usr/libexec/palletizer/first-start" "$x/server.toml" >"$x/pre.out"
  grep -q "| cargo login --registry palletizer" "$x/pre.out" || die "first-start with the $arch palletizer printed no token"
  "$qemu" "$x/usr/bin/palletizer-server" "$x/server.toml" >"$x/server.out" 2>"$WORK/$arch.log" &
  SERVER_PID=$!
  for _ in $(seq 300); do
    grep -q '^listening on ' "$WORK/$arch.log" && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "the $arch palletizer-server exited at start"
    sleep 0.1
  done
  echo "$(machine "$x/usr/bin/palletizer-server"): $(head -n 1 "$WORK/$arch.log")"
  echo "GET /index/config.json: $(curl -fsS "http://127.0.0.1:$PORT/index/config.json")"
  stop
done
T_QEMU=$(elapsed "$T0")

# ---- 7. A booted systemd: the unit itself, its sandbox and the journal ----------------------------
# A Debian whose systemd boots on this kernel's cgroups (bookworm's 252 still takes the
# v1/hybrid layout that newer ones refuse), booted with systemd-nspawn on the host's
# network: postinst enables the unit, systemd starts it at boot with the whole sandbox,
# a probe unit restarts and reloads it and keeps the journal; the host fetches config.json.
T_BOOT=skipped
if [ "${DEB_CHECK_BOOT:-1}" != 0 ]; then
  T0=$SECONDS
  BOOT=$WORK/boot
  BOOT_SUITE=${DEB_CHECK_BOOT_SUITE:-bookworm}
  say "debootstrap $BOOT_SUITE with systemd, dpkg -i, boot it with systemd-nspawn"
  command -v systemd-nspawn >/dev/null || {
    apt-get install -y -qq --no-install-recommends systemd-container </dev/null >/dev/null
  }
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus --cache-dir="$CACHE" \
    "$BOOT_SUITE" "$BOOT" "$MIRROR" >"$WORK/debootstrap-boot.log" 2>&1 ||
    die "debootstrap $BOOT_SUITE failed (see $WORK/debootstrap-boot.log)"
  cp "$(deb_of amd64)" "$BOOT/tmp/palletizer.deb"
  chroot "$BOOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin dpkg -i /tmp/palletizer.deb >"$WORK/dpkg-boot.log" 2>&1 ||
    die "dpkg -i in the $BOOT_SUITE tree failed"
  [ -L "$BOOT/etc/systemd/system/multi-user.target.wants/palletizer.service" ] ||
    die "postinst did not enable palletizer.service"
  sed -i "s/^bind = \"0.0.0.0:8080\"/bind = \"0.0.0.0:$PORT\"/" "$BOOT/etc/palletizer/server.toml"
  cat >"$BOOT/etc/systemd/system/probe.service" <<'UNIT'
[Unit]
After=palletizer.service
[Service]
Type=oneshot
ExecStart=/bin/bash -c 'for i in $(seq 100); do systemctl -q is-active palletizer && break; sleep 0.1; done; sleep 2; \
  systemctl restart palletizer; systemctl reload palletizer; sleep 1; \
  { systemctl show -p ActiveState,NRestarts,User palletizer; journalctl -u palletizer --no-pager -o cat; } >/root/probe.out 2>&1; \
  for i in $(seq 600); do [ -e /root/stop ] && break; sleep 0.1; done; systemctl poweroff'
[Install]
WantedBy=multi-user.target
UNIT
  ln -s /etc/systemd/system/probe.service "$BOOT/etc/systemd/system/multi-user.target.wants/probe.service"
  nspawn=(systemd-nspawn -q -D "$BOOT" -b --console=pipe)
  # Without systemd on the host there is no bus to register with or scope to make.
  [ -d /run/systemd/system ] || nspawn+=(--register=no --keep-unit)
  timeout 180 "${nspawn[@]}" </dev/null >"$WORK/boot.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 600); do
    [ -s "$BOOT/root/probe.out" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "the container stopped before the probe ran"
    sleep 0.1
  done
  [ -s "$BOOT/root/probe.out" ] || die "the probe wrote nothing within 60 s"
  sleep 0.5
  booted=$(curl -fsS "http://127.0.0.1:$PORT/index/config.json") || die "the booted service serves no config.json"
  touch "$BOOT/root/stop"
  wait "$SERVER_PID" || true
  SERVER_PID=
  sed 's/pal_[A-Za-z0-9_]*/pal_…/' "$BOOT/root/probe.out" | grep -v '^$'
  echo "GET /index/config.json from the host: $(tr -d '\n ' <<<"$booted")"
  grep -qx ActiveState=active "$BOOT/root/probe.out" || die "palletizer.service is not active after restart and reload"
  grep -q '^Reloaded palletizer.service' "$BOOT/root/probe.out" || die "systemctl reload did not finish"
  n=$(grep -c '| cargo login --registry palletizer' "$BOOT/root/probe.out" || true)
  [ "$n" = 1 ] || die "the journal of two starts holds $n token lines, not 1"
  [ "$(grep -c '^Started palletizer.service' "$BOOT/root/probe.out")" = 2 ] || die "the journal shows not two starts"
  echo "journal of two starts: 1 token line"
  T_BOOT=$(elapsed "$T0")
fi

kib() { echo $(($(stat -c %s "$1") / 1024)); }
cat <<EOF

Debian package check passed ($SUITE chroot)
| what | value |
|---|---|
| palletizer_${VERSION}_amd64.deb / arm64 / armhf | $(kib "$(deb_of amd64)") / $(kib "$(deb_of arm64)") / $(kib "$(deb_of armhf)") KiB |
| time: build / debootstrap / install and serve / systemd / qemu / boot / total | $T_BUILD / $T_CHROOT / $T_INSTALL / $T_SYSTEMD / $T_QEMU / $T_BOOT / $((SECONDS - START)) s |
EOF
