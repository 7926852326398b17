#!/usr/bin/env bash
# Cross-builds `edge` for a Raspberry Pi 4/5 or a Jetson (aarch64-unknown-linux-gnu) on an x86
# Debian 12 machine with Debian's own packages only (no rustup target, nothing downloaded but
# Debian packages and crates), and optionally tests it under user-mode emulation.
#
#   edge/deploy/build-arm64.sh --install   as root: the Debian packages it needs (once)
#   edge/deploy/build-arm64.sh             release build with the `linux` and `v4l2` features:
#                                          target/arm64/aarch64-unknown-linux-gnu/release/edge
#   edge/deploy/build-arm64.sh --deb       ... and leukoscope-edge_<version>_arm64.deb in
#                                          target/arm64/debian/ (needs cargo-deb)
#   edge/deploy/build-arm64.sh --test      ... and the hardware and device unit tests, run under
#                                          qemu-aarch64
#   edge/deploy/build-arm64.sh --compare X86_EDGE
#                                          ... and the end-to-end check: `edge classify` and
#                                          `edge run --source -` with the shipped models under
#                                          qemu, against the x86 binary X86_EDGE on the same
#                                          pictures (same labels; max |Δp| printed)
#   edge/deploy/build-arm64.sh --compare X86_EDGE --also-model M.onnx
#                                          ... and classify with M.onnx too (repeatable)
# Flags combine. The arm64 build uses its own target folder (target/arm64), so Debian's rustc
# (1.96, with an aarch64 standard library) and the rustup toolchain never share build files.
# Under qemu, timings are not speed figures: measure speed on the board (`edge bench`).
set -euo pipefail
cd "$(dirname "$0")/../.."

TRIPLE=aarch64-unknown-linux-gnu
install=0 deb=0 test=0 compare="" also=()
while [ $# -gt 0 ]; do
  case "$1" in
    --install) install=1 ;;
    --deb) deb=1 ;;
    --test) test=1 ;;
    --compare) compare="$2"; shift ;;
    --also-model) also+=("$2"); shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "build-arm64.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$install" = 1 ]; then
  dpkg --add-architecture arm64
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web \
    libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static \
    libclang-dev
fi

# Debian's Rust (rustc-web) has the aarch64 standard library; rustup's has not.
export RUSTC=/usr/bin/rustc
export RUSTDOC=/usr/bin/rustdoc
CARGO=/usr/bin/cargo
export CARGO_TARGET_DIR="$PWD/target/arm64"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# qemu runs aarch64 programs with the arm64 C library that libstd-rust-web-dev:arm64 installs
# (multiarch: /lib/ld-linux-aarch64.so.1 and /lib/aarch64-linux-gnu). Do not pass
# `-L /usr/aarch64-linux-gnu`: that loader (libc6-arm64-cross, another glibc build) then loads
# the multiarch libc.so.6, and the mismatched pair hangs in the first thread spawn.
QEMU="qemu-aarch64-static -L /"
# A test program that hangs under emulation fails the step after 10 min instead of the CI run.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="timeout --kill-after=10 600 $QEMU"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--sysroot=/usr/aarch64-linux-gnu"
export CARGO_TERM_COLOR=never
for tool in "$RUSTC" "$CARGO" aarch64-linux-gnu-gcc; do
  command -v "$tool" >/dev/null || {
    echo "build-arm64.sh: $tool missing: run it once with --install (as root)" >&2
    exit 1
  }
done

echo "== aarch64 release build of edge (features linux, v4l2) with $($RUSTC --version)"
$CARGO build --release --locked -p edge --features linux,v4l2 --target "$TRIPLE"
bin="$CARGO_TARGET_DIR/$TRIPLE/release/edge"
file "$bin" 2>/dev/null || true

if [ "$test" = 1 ]; then
  echo "== hardware and device unit tests under qemu-aarch64"
  # The release profile shares the binary's compiled dependencies.
  $CARGO test --release --locked --target "$TRIPLE" -p hardware --features linux
  $CARGO test --release --locked --target "$TRIPLE" -p edge --features linux,v4l2 --lib
fi

if [ -n "$compare" ]; then
  echo "== end to end under qemu-aarch64 against $compare"
  python3 edge/deploy/compare_arm64.py --arm "$QEMU $bin" --x86 "$compare" --also "${also[@]}"
fi

if [ "$deb" = 1 ]; then
  echo "== leukoscope-edge arm64 package"
  edge/deploy/package.sh --target "$TRIPLE" --no-build
fi
