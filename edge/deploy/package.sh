#!/usr/bin/env bash
# Builds the Debian package leukoscope-edge_<version>_<arch>.deb into target/debian/ (or
# $CARGO_TARGET_DIR/debian/) with cargo-deb (`cargo install cargo-deb`).
#
# The package holds the edge binary as /usr/bin/leukoscope-edge, the shipped models (models/*.onnx)
# under /usr/share/leukoscope/models, the example config as /etc/leukoscope/leukoscope.toml (a
# conffile) with those models' sha256 pins filled in, and the systemd units of edge/deploy/.
#
#   edge/deploy/package.sh                       build edge (release) for this machine and package it
#   edge/deploy/package.sh --target aarch64-unknown-linux-gnu --no-build
#                                                package a binary already cross-built
#                                                (edge/deploy/build-arm64.sh does both)
#   edge/deploy/package.sh --profile dev --no-build
#                                                package the binary of the debug build (CI's install
#                                                test: no second build of the whole tree)
# Other arguments go to `cargo deb`.
set -euo pipefail
cd "$(dirname "$0")/../.."

target_dir="${CARGO_TARGET_DIR:-target}"
config_dir="target/leukoscope-deb"
mkdir -p "$config_dir"
config="$config_dir/leukoscope.toml"

# The packaged config: the example, with the pins of exactly the models the package ships.
shopt -s nullglob
models=(models/*.onnx)
if [ ${#models[@]} -eq 0 ]; then
  echo "package.sh: no models/*.onnx to ship" >&2
  exit 1
fi
{
  cat edge/leukoscope.example.toml
  echo
  echo "# The shipped models' digests, filled in when the package was built: a model file in"
  echo "# /usr/share/leukoscope/models that is not pinned here, or differs, refuses to start."
  echo "[model.sha256]"
  for m in "${models[@]}"; do
    echo "\"$(basename "$m")\" = \"$(sha256sum "$m" | cut -d' ' -f1)\""
  done
} > "$config"
echo "packaged config: $config (${#models[@]} model pins)"

args=()
build_features=("--features" "linux")
for a in "$@"; do
  args+=("$a")
done
# cargo-deb strips the binary with the target's own strip when it can find it; the release
# profile has no debug info anyway.
exec cargo deb -p edge --no-strip "${build_features[@]}" "${args[@]}"
