#!/usr/bin/env bash
# Builds iamd and lays out the runtime image's files under OUT (default /out):
#
#   OUT/usr/local/bin/iamd      the binary (a release build)
#   OUT/etc/iamd/store/         the example policy store
#
# The Dockerfile's build stage runs exactly this script and copies OUT into
# the runtime image. `cargo test` runs it too (tests/deploy_container.rs, with
# IAMD_PROFILE=dev to reuse the test build) and checks the layout it makes,
# so the image recipe cannot rot unnoticed.
set -euo pipefail

out="${1:-/out}"
profile="${IAMD_PROFILE:-release}"
cd "$(dirname "$0")/../.."

cargo build --locked --profile "$profile" --bin iamd

# Cargo puts the dev profile's output in `debug`, every other in its own name.
if [ "$profile" = dev ]; then dir=debug; else dir="$profile"; fi
install -D -m 0755 "${CARGO_TARGET_DIR:-target}/$dir/iamd" "$out/usr/local/bin/iamd"
mkdir -p "$out/etc/iamd"
rm -rf "$out/etc/iamd/store"
cp -R examples/store "$out/etc/iamd/store"
