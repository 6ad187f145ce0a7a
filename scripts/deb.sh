#!/usr/bin/env bash
# The Debian package: static release binaries of palletizer and palletizer-server, the
# systemd unit palletizer.service, its first-start helper and a default
# /etc/palletizer/server.toml (a conffile), written with dpkg-deb.
#
#   scripts/deb.sh                                  amd64 (x86_64-unknown-linux-gnu)
#   scripts/deb.sh aarch64-unknown-linux-gnu        arm64 (64-bit Raspberry Pi OS)
#   scripts/deb.sh armv7-unknown-linux-gnueabihf    armhf (32-bit Raspberry Pi OS)
#   DEB_SKIP_BUILD=1 scripts/deb.sh [TARGET]        package the last build only
#
# Output: target/debian/palletizer_VERSION_ARCH.deb. The binaries are static (glibc's
# static libraries), so the package depends on nothing and installs on any Debian or
# Raspberry Pi OS of that architecture. The files it ships are in pkg/deb/; what the
# package does on a machine is in docs/deploying.md. Missing tools (a cross gcc and libc,
# the Rust target) are installed when run as root; otherwise the script says which.
# scripts/deb-check.sh installs the packages in a clean Debian chroot and serves from them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${1:-x86_64-unknown-linux-gnu}

say() { printf '== %s\n' "$*"; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

case "$TARGET" in
  x86_64-unknown-linux-gnu) GNU=x86_64-linux-gnu DEBARCH=amd64 MACHINE=62 ;;
  aarch64-unknown-linux-gnu) GNU=aarch64-linux-gnu DEBARCH=arm64 MACHINE=183 ;;
  armv7-unknown-linux-gnueabihf) GNU=arm-linux-gnueabihf DEBARCH=armhf MACHINE=40 ;;
  *) die "TARGET must be x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf, not $TARGET" ;;
esac
HOST=$(rustc -vV | sed -n 's/^host: //p')
ENVNAME=$(echo "$TARGET" | tr 'a-z-' 'A-Z_')
CCNAME=$(echo "$TARGET" | tr '-' '_')
BIN=$ROOT/target/$TARGET/release
VERSION=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
DESCRIPTION=$(sed -n '/^\[package\]/,/^\[/s/^description *= *"\(.*\)"/\1/p' Cargo.toml)
[ -n "$VERSION" ] || die "no version in Cargo.toml's [package]"

# ---- Tools --------------------------------------------------------------------------------
# A host build uses the host's gcc; a cross build its GNU triple's gcc and libc.
if [ "$TARGET" = "$HOST" ]; then
  CC=gcc
  LIBC_A=/usr/lib/$GNU/libc.a
  pkgs_for() { echo "gcc libc6-dev"; }
else
  CC=$GNU-gcc
  LIBC_A=/usr/$GNU/lib/libc.a
  pkgs_for() { echo "gcc-${GNU//_/-} libc6-dev-$DEBARCH-cross"; }
fi
if [ -z "${DEB_SKIP_BUILD:-}" ]; then
  if ! command -v "$CC" >/dev/null || [ ! -e "$LIBC_A" ] || ! command -v dpkg-deb >/dev/null; then
    read -ra pkgs <<<"$(pkgs_for) dpkg"
    [ "$(id -u)" = 0 ] || die "missing $CC, $LIBC_A or dpkg-deb: run as root, or: sudo apt-get install ${pkgs[*]}"
    say "installing ${pkgs[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" </dev/null >/dev/null
  fi
  if [ ! -d "$(rustc --print sysroot)/lib/rustlib/$TARGET" ]; then
    command -v rustup >/dev/null || die "the Rust standard library for $TARGET is missing and rustup is not installed"
    say "installing the Rust target $TARGET (rustup target add)"
    rustup target add "$TARGET"
  fi
fi
for tool in dpkg-deb readelf md5sum; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done

# ---- Build --------------------------------------------------------------------------------
# The flags go only to the target, through its own variables, as in scripts/pi-smoke.sh,
# whose static builds land in the same target/TARGET/release/.
if [ -z "${DEB_SKIP_BUILD:-}" ]; then
  if [ "$TARGET" != "$HOST" ]; then
    export "CARGO_TARGET_${ENVNAME}_LINKER=$CC"
    export "CC_${CCNAME}=$CC" "AR_${CCNAME}=$GNU-ar"
  fi
  if [ "$TARGET" = armv7-unknown-linux-gnueabihf ]; then
    # 64-bit file offsets for libgit2's readdir (see scripts/pi-smoke.sh).
    export "CFLAGS_${CCNAME}=-D_FILE_OFFSET_BITS=64"
  fi
  export "CARGO_TARGET_${ENVNAME}_RUSTFLAGS=-C target-feature=+crt-static"
  say "building palletizer and palletizer-server for $TARGET (static, release)"
  cargo build --release --locked --target "$TARGET" --bins
fi
for b in palletizer palletizer-server; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run without DEB_SKIP_BUILD"
  # e_machine of the ELF header, and no program interpreter: a static binary of TARGET.
  [ "$(od -An -tu2 -j18 -N2 "$BIN/$b" | tr -d ' ')" = "$MACHINE" ] || die "$BIN/$b is not a $TARGET binary"
  if readelf -lW "$BIN/$b" | grep -q 'program interpreter'; then
    die "$BIN/$b is dynamically linked; the package ships static binaries"
  fi
done

# ---- Package ------------------------------------------------------------------------------
STAGE=$ROOT/target/debian/$DEBARCH
OUT=$ROOT/target/debian/palletizer_${VERSION}_$DEBARCH.deb
rm -rf "$STAGE"
install -d "$STAGE/DEBIAN" "$STAGE/usr/share/doc/palletizer/docs"
install -m 0755 "$BIN/palletizer" "$BIN/palletizer-server" -D -t "$STAGE/usr/bin"
install -m 0755 -D pkg/deb/first-start "$STAGE/usr/libexec/palletizer/first-start"
install -m 0644 -D pkg/deb/palletizer.service "$STAGE/usr/lib/systemd/system/palletizer.service"
install -m 0644 -D pkg/deb/sysusers.conf "$STAGE/usr/lib/sysusers.d/palletizer.conf"
install -m 0644 -D pkg/deb/server.toml "$STAGE/etc/palletizer/server.toml"
install -m 0644 pkg/deb/copyright README.md -t "$STAGE/usr/share/doc/palletizer"
install -m 0644 docs/*.md -t "$STAGE/usr/share/doc/palletizer/docs"
install -m 0755 pkg/deb/postinst pkg/deb/prerm pkg/deb/postrm -t "$STAGE/DEBIAN"
echo /etc/palletizer/server.toml >"$STAGE/DEBIAN/conffiles"
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' |
  sort -z | xargs -0 md5sum) >"$STAGE/DEBIAN/md5sums"
cat >"$STAGE/DEBIAN/control" <<EOF
Package: palletizer
Version: $VERSION
Architecture: $DEBARCH
Maintainer: ${DEB_MAINTAINER:-Palletizer builders <palletizer@localhost.invalid>}
Installed-Size: $(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
Section: devel
Priority: optional
Description: $DESCRIPTION
 Palletizer is a small self-hosted private Cargo registry: one process, a
 directory of plain files and one git repository. It serves the sparse index,
 the git index over smart HTTP, crate downloads and the cargo web API, over HTTP
 or HTTPS. The package runs it as the systemd service palletizer.service, as the
 user palletizer, on the registry in /var/lib/palletizer, created on the first
 start with an admin token printed once to the journal.
EOF
say "writing $OUT"
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$OUT" >/dev/null
printf '%s (%s KiB)\n' "$OUT" $(($(stat -c %s "$OUT") / 1024))
