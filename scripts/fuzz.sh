#!/bin/sh
# fuzz.sh TIME PKG:FUNC... — runs each Go fuzz target for TIME (a
# -fuzztime value), one after another, and fails on the first finding.
#
# Go 1.26's fuzzing coordinator can fail a target that found nothing: when
# the -fuzztime deadline fires it may read the parent context's error
# before the child's and report a bare "context deadline exceeded"
# (go.dev/issue/75804, fixed in Go 1.27). A real finding always prints
# "Failing input written to" or a panic first, so a run that ends with
# only that line is run again, at most twice; anything else fails at once.
set -u
time=$1
shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "$@"; do
	pkg=${t%%:*}
	fn=${t##*:}
	echo "fuzz $fn ($pkg) for $time"
	try=1
	while :; do
		if ${GO:-go} test -run '^$' -fuzz "^$fn\$" -fuzztime "$time" "$pkg" >"$log" 2>&1; then
			tail -1 "$log"
			break
		fi
		if [ "$try" -lt 3 ] && grep -q '^    context deadline exceeded$' "$log" &&
			! grep -q -e 'Failing input written to' -e '^panic:' -e '--- FAIL: .*/' "$log"; then
			echo "fuzz $fn: the coordinator's deadline race (go.dev/issue/75804), no input found; again"
			try=$((try + 1))
			continue
		fi
		cat "$log"
		exit 1
	done
done
