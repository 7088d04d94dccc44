#!/usr/bin/env bash
# Benchmark of a full hash-table walk: 2^20 buckets, a million entries.
# Builds the release binary, fills the table from a private namespace,
# prints the fill rate and three walks' wall and CPU time, and restores
# nf_conntrack_max and nf_conntrack_buckets (SysctlGuard), even on failure.
# Needs root and ~300 MiB of free memory; takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --package conntrack-user --bin ctscope
CTSCOPE_BIN="$PWD/target/release/ctscope" cargo test --release -p ctscope-integration \
    --test buckets -- --ignored --nocapture --test-threads=1 bench_walk_of_a_million_entries
