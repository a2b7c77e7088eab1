#!/usr/bin/env bash
# Dependency audit of Cargo.lock against the RustSec advisory database,
# offline: `cargo audit` and `cargo deny` (advisories, licences, duplicate
# major versions, sources; deny.toml) over a local snapshot of
# github.com/rustsec/advisory-db. Installs both tools when missing.
#
# Any advisory found - a vulnerability, or an unmaintained / unsound / yanked
# crate - fails the script unless .cargo/audit.toml and deny.toml both ignore
# it with a reason; so does a licence deny.toml does not allow, or a second
# major version of a crate it does not list.
#
# The database: $RECSYS_ADVISORY_DB, else ../shared/advisory-db beside the
# repository. It may be read-only and need not be a git repository: both tools
# open the database as one, so it is copied to a temporary directory and
# committed there once. Exit codes: 0 clean, 1 findings, 2 no database.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

log() { printf 'audit: %s\n' "$*" >&2; }

src="${RECSYS_ADVISORY_DB:-$root/../shared/advisory-db}"
if [ ! -d "$src/crates" ]; then
    log "no advisory database at $src (expected a copy of github.com/rustsec/advisory-db with its crates/ folder; set RECSYS_ADVISORY_DB)"
    exit 2
fi
src="$(cd "$src" && pwd)"

work="$(mktemp -d "${TMPDIR:-/tmp}/recsys-audit.XXXXXX")"
trap 'rm -rf "$work"' EXIT
db="$work/advisory-db"
cp -R "$src" "$db"
chmod -R u+w "$db"
if [ ! -d "$db/.git" ]; then
    git -C "$db" init -q
    git -C "$db" add -A
    git -C "$db" -c user.name=recsys-audit -c user.email=audit@localhost -c commit.gpgsign=false \
        commit -q -m "advisory-db snapshot from $src"
fi
snapshot="$(grep -o -m1 '[0-9a-f]\{40\}' "$src/SNAPSHOT.md" 2>/dev/null || true)"
log "advisory database: $src${snapshot:+ (advisory-db commit $snapshot)}"

# Pinned: deny.toml names the database directory cargo-deny 0.20 derives
# from its default URL, and both tools' config formats change between
# releases. A tool already installed is used as it is.
install() {
    local tool="$1" version="$2"
    command -v "$tool" >/dev/null 2>&1 && return 0
    log "installing $tool $version (cargo install $tool --locked; several minutes, once)"
    cargo install "$tool" --version "$version" --locked
}
install cargo-audit 0.22.2
install cargo-deny 0.20.2

# One ignore list in two formats: the same advisories in both files.
ids() { grep -v '^[[:space:]]*#' "$1" | grep -o 'RUSTSEC-[0-9]\{4\}-[0-9]\{4\}' | sort -u || true; }
if [ "$(ids .cargo/audit.toml)" != "$(ids deny.toml)" ]; then
    log "the advisories ignored in .cargo/audit.toml ($(ids .cargo/audit.toml | tr '\n' ' ')) and deny.toml ($(ids deny.toml | tr '\n' ' ')) differ"
    exit 1
fi

status=0
log "cargo audit $(cargo audit --version | awk '{print $2}') (ignores: .cargo/audit.toml)"
# --no-fetch: never reach for GitHub; --stale: the snapshot is as old as it
# is (SNAPSHOT.md dates it); --deny warnings: unmaintained, unsound and
# yanked crates fail too (also set in .cargo/audit.toml).
cargo audit --db "$db" --no-fetch --stale --deny warnings || status=1

log "cargo deny $(cargo deny --version | awk '{print $2}'): advisories, licenses, bans, sources (deny.toml)"
# cargo metadata needs every platform's packages, which a Linux build never
# downloads: fetch them from the crates registry (the advisory database is
# never fetched).
cargo fetch --locked --quiet
mkdir -p "$work/deny-dbs"
ln -s "$db" "$work/deny-dbs/advisory-db-3157b0e258782691"
RECSYS_DENY_DB_ROOT="$work/deny-dbs" cargo deny --offline --locked check advisories licenses bans sources || status=1

if [ "$status" -ne 0 ]; then
    log "FAILED: fix each finding (e.g. cargo update -p CRATE --precise VERSION) or add it, with its reason, to .cargo/audit.toml and deny.toml"
else
    log "no findings beyond the listed exceptions"
fi
exit "$status"
