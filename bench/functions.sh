#!/bin/sh
# Functions and records benchmarks: function cold start and warm invocation, batchSave
# records/s on SQLite and PostgreSQL (DATABASE_URL, default the local server), and the
# latency of a 1,000-record page with 1,000,000 records stored (LATCHKEY_BENCH_RECORDS).
# Builds in release mode. Figures depend on the machine: run it on an idle one.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --locked -p latchkey --example functions_bench
exec target/release/examples/functions_bench
