#!/usr/bin/env bash
# A nightly VM suite on a self-hosted runner: a Debian 12 machine (or VM) that
# runs one job at a time, as root or as a user with sudo. Run it from the
# crate whose tests use lago:
#
#   examples/ci/self-hosted.sh [TEST_TARGET]     # default: system
#
# The host keeps its state between runs: the template store (tiny's kernel is
# built once) and cargo's target folder. Each run sweeps what a killed run left
# (`lago gc`) before and after, so a crashed night never eats the next one's
# subnets. Guests live in the test network namespace (`lago-test`, or
# LAGO_NETNS), where setup-host starts libvirtd and which stays for the next
# run. On a host with systemd, setup-host stops the host namespace's libvirtd
# (the namespace's one owns the sockets). A user who is not root needs
# passwordless sudo and the `libvirt` group.
set -euo pipefail
suite=${1:-system}
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

cargo fetch --locked
lago_src=$(dirname "$(cargo metadata --format-version 1 --locked |
    jq -r '.packages[] | select(.name == "lago") | .manifest_path')")
[ -x "$lago_src/scripts/setup-host" ] || { echo "lago is not a dependency of this crate" >&2; exit 1; }
netns_run() { "$lago_src/scripts/netns-run" "$@"; }

"$lago_src/scripts/setup-host"
"${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    linux-source-6.1 build-essential flex bison libelf-dev bc
cargo install --locked --path "$lago_src" --bin lago --root target/lago-cli
export PATH="$PWD/target/lago-cli/bin:$PATH"
# A failing test leaves its machines in target/lago-artifacts/<test>/bundle/:
# `lago replay` brings them back.
export LAGO_BUNDLE=on-failure LAGO_BUNDLE_MAX=1G

lago template build tiny --kernel
netns_run lago doctor
netns_run lago gc
trap 'netns_run lago gc' EXIT

cargo test --locked --test "$suite" --no-run
rm -rf target/lago-junit.xml target/lago-artifacts # not an earlier run's
netns_run cargo test --locked --offline --test "$suite" -- \
    --include-ignored --junit "$PWD/target/lago-junit.xml"
# Failed tests leave target/lago-artifacts/<test>/ (console logs, SSH transcript,
# the init file's `artifacts`): archive it with target/lago-junit.xml.
