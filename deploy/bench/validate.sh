#!/usr/bin/env bash
# Validation's CPU per body (`schema::validate`, the edge's parse, rescue, rules and masking), this tree
# against a baseline revision, side by side: both builds of schema/examples/validate.rs (release) run in
# turns, ROUNDS times each; prints each round's nanoseconds per body and the medians with the ratio
# new / base. The baseline is BASE_REV (default HEAD, i.e. the last commit, against the working tree's
# changes) checked out into a temporary worktree, with this tree's example copied in.
# Usage: deploy/bench/validate.sh [N bodies per run, default 200000]    BASE_REV=<rev> ROUNDS=5 by env.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT"
N=${1:-200000}
ROUNDS=${ROUNDS:-5}
BASE_REV=${BASE_REV:-HEAD}
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
WORK=$(mktemp -d)
cleanup() { git worktree remove --force "$WORK/base" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release --locked -q -p schema --example validate
cp "$TARGET/release/examples/validate" "$WORK/new"
git worktree add -q --detach "$WORK/base" "$BASE_REV"
mkdir -p "$WORK/base/schema/examples"
cp schema/examples/validate.rs "$WORK/base/schema/examples/validate.rs"
(cd "$WORK/base" && CARGO_TARGET_DIR="$TARGET/bench-base" cargo build --release --locked -q -p schema --example validate)
cp "$TARGET/bench-base/release/examples/validate" "$WORK/base-bin"
echo "base: $(git rev-parse --short "$BASE_REV"), new: this tree; $N bodies per run, $ROUNDS rounds" >&2

for _ in $(seq 1 "$ROUNDS"); do
  "$WORK/base-bin" "$N" | sed 's/^/base /'
  "$WORK/new" "$N" | sed 's/^/new /'
done >"$WORK/runs"
cat "$WORK/runs" >&2
median() { grep "^$1 $2 " "$WORK/runs" | awk '{ print $3 }' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
for kind in installing failed; do
  base=$(median base "validate_${kind}_ns_per_body"); new=$(median new "validate_${kind}_ns_per_body")
  echo "validate_${kind}_ns_per_body base=$base new=$new ratio_new_base=$(echo "scale=2; $new / $base" | bc)"
done
