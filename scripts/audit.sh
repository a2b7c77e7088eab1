#!/usr/bin/env bash
# cargo audit over Cargo.lock (installs cargo-audit when missing). The RustSec
# advisory database is fetched from GitHub: where GitHub is unreachable (this
# development machine and its CI), the script says so and exits 2.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! timeout 10 git ls-remote https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
    echo "audit: github.com (the RustSec advisory database) is unreachable from here; not audited" >&2
    exit 2
fi
command -v cargo-audit >/dev/null 2>&1 || cargo install cargo-audit --locked
exec cargo audit --deny warnings
