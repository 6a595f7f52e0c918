#!/usr/bin/env bash
# compat.sh — `make compat`: run moby's own integration tests (moby v28.2.2:
# integration/container, image, network, system, volume) against a VCH and
# print PASS/FAIL/SKIP per top-level test and a summary. A measurement, not a
# gate: it exits 0 whatever the tests do, and non-zero only when it cannot
# measure (the source cannot be had, a test binary does not build, the
# daemon does not start or the busybox image cannot be loaded). See
# docs/notes.md ("Fidelity to moby's integration suite").
#
# Environment (all optional):
#   DOCKER_HOST      an existing endpoint to test (DOCKER_TLS_VERIFY and
#                    DOCKER_CERT_PATH pass through). Unset: the script starts
#                    its own `bin/vch daemon` under $VCH_COMPAT_DIR and stops
#                    it (and the VMs it started) at the end.
#   VCH_COMPAT_DIR   work and cache directory (default /tmp/vch-compat)
#   MOBY_SRC         a checked-out moby tree (with vendor/). Unset: a shallow
#                    clone of $MOBY_VERSION into $VCH_COMPAT_DIR/src.
#   MOBY_VERSION     tag to clone when MOBY_SRC is unset (default v28.2.2)
#   COMPAT_PKGS      packages under integration/ (default
#                    "container image network system volume")
#   COMPAT_RUN       extended regex: only tests whose names match run
#   COMPAT_TIMEOUT   per-test -test.timeout (default 5m)
#   COMPAT_REBUILD   1: rebuild the test binaries even if cached
#   VCH_DAEMON_ARGS  extra flags for the daemon the script starts
set -u

here=$(cd "$(dirname "$0")/.." && pwd)
dir=${VCH_COMPAT_DIR:-/tmp/vch-compat}
mkdir -p "$dir" && dir=$(cd "$dir" && pwd)
version=${MOBY_VERSION:-v28.2.2}
pkgs=${COMPAT_PKGS:-container image network system volume}
run_re=${COMPAT_RUN:-.}
test_timeout=${COMPAT_TIMEOUT:-5m}
# A test binary that outlives its own -test.timeout by a minute is killed.
case $test_timeout in
*m) hard_timeout=$((${test_timeout%m} + 1))m ;;
*) hard_timeout=60m ;;
esac
export PATH=/usr/local/go/bin:$PATH:$here/bin/docker-20.10

log() { echo "compat: $*" >&2; }
die() { log "$*"; exit 2; }

command -v go >/dev/null || die "go not found (expected in /usr/local/go/bin)"
command -v docker >/dev/null || die "no docker CLI (make deps unpacks one into bin/docker-20.10)"

# ---- moby source, in GOPATH layout ------------------------------------------
if [ -z "${MOBY_SRC:-}" ]; then
	MOBY_SRC=$dir/src/moby-$version
	if [ ! -d "$MOBY_SRC/vendor" ]; then
		log "cloning moby $version into $MOBY_SRC"
		rm -rf "$MOBY_SRC"
		mkdir -p "$dir/src"
		git clone -q --depth 1 --branch "$version" https://github.com/moby/moby "$MOBY_SRC" ||
			die "git clone of moby $version failed (set MOBY_SRC to a checked-out tree)"
	fi
fi
[ -d "$MOBY_SRC/vendor" ] && [ -d "$MOBY_SRC/integration" ] ||
	die "MOBY_SRC=$MOBY_SRC is not a moby tree with vendor/ and integration/"
src=$(cd "$MOBY_SRC" && pwd -P)
case $src in
*/src/github.com/docker/docker)
	gopath=${src%/src/github.com/docker/docker}
	;;
*)
	# Not in GOPATH layout: a GOPATH of our own with a link to the tree.
	gopath=$dir/gopath
	link=$gopath/src/github.com/docker/docker
	mkdir -p "$gopath/src/github.com/docker"
	if [ -e "$link" ] && [ ! -L "$link" ]; then
		die "$link exists and is not a symlink; move it away or set MOBY_SRC to it"
	fi
	ln -sfn "$src" "$link"
	;;
esac
tree=$gopath/src/github.com/docker/docker

# ---- test binaries (cached per source tree and Go version) ------------------
key=$( { echo "$src"; go version; git -C "$src" rev-parse HEAD 2>/dev/null; cat "$src/vendor/modules.txt" 2>/dev/null | head -c 100000; } | sha256sum | cut -c1-12)
bindir=$dir/build/$key
logdir=$dir/logs
mkdir -p "$bindir" "$logdir"
pkgname() { echo "$1" | tr / -; } # network/bridge -> network-bridge
for p in $pkgs; do
	out=$bindir/$(pkgname "$p").test
	if [ -x "$out" ] && [ "${COMPAT_REBUILD:-0}" != 1 ]; then
		continue
	fi
	log "building integration/$p (GOPATH mode) -> $out"
	blog=$logdir/build-$(pkgname "$p").log
	if ! (cd "$tree" && GOPATH=$gopath GO111MODULE=off GOFLAGS= GOTOOLCHAIN=local \
		go test -c -o "$out.tmp" "github.com/docker/docker/integration/$p") >"$blog" 2>&1; then
		cat "$blog" >&2
		die "building integration/$p failed (log: $blog)"
	fi
	mv "$out.tmp" "$out"
done

# ---- the endpoint ------------------------------------------------------------
pid=
root=$dir/root
# reap kills the VMMs whose command line names a path under our root (what
# a stopped daemon leaves running on purpose) and removes its network
# namespace, as internal/testenv's Daemon.Stop does.
reap() {
	local p cmd killed=
	for p in /proc/[0-9]*; do
		cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
		case $cmd in
		*"$root/"*" -name vch-"*)
			kill -KILL "${p#/proc/}" 2>/dev/null && killed="$killed ${p#/proc/}"
			;;
		esac
	done
	for p in $killed; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	done
	local ns
	ns=vch-$(printf %s "$root" | sha256sum | cut -c1-12)
	[ -e "/var/run/netns/$ns" ] && ip netns delete "$ns" 2>/dev/null
	return 0
}
stop_daemon() {
	[ -n "$pid" ] || return 0
	log "stopping the vch daemon (pid $pid)"
	# Container VMs outlive the daemon: remove them first, then reap.
	local ids
	ids=$(docker ps -aq 2>/dev/null)
	[ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
	kill -TERM "$pid" 2>/dev/null
	for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	reap
	rm -f "$dir/daemon.pid"
	pid=
}
trap 'stop_daemon; declare -F clean_testutil_daemons >/dev/null && clean_testutil_daemons' EXIT
trap 'exit 130' INT TERM

if [ -n "${DOCKER_HOST:-}" ]; then
	log "testing the existing endpoint $DOCKER_HOST"
	docker version >/dev/null 2>&1 || die "DOCKER_HOST=$DOCKER_HOST does not answer"
else
	[ -x "$here/bin/vch" ] && [ -x "$here/bin/busybox-image" ] || die "bin/vch not built (make build)"
	if [ -f "$dir/daemon.pid" ] && tr '\0' ' ' <"/proc/$(cat "$dir/daemon.pid")/cmdline" 2>/dev/null | grep -qF -- "--root $root "; then
		die "a daemon of an earlier run (pid $(cat "$dir/daemon.pid")) still runs on $root"
	fi
	reap # VMs an earlier, killed run left behind
	rm -rf "$root"
	sock=$dir/d.sock
	rm -f "$sock"
	unset DOCKER_TLS_VERIFY DOCKER_CERT_PATH DOCKER_CONTEXT
	export DOCKER_HOST=unix://$sock
	# Run from bin/ (the daemon finds tether, the kernels and the shim there).
	# shellcheck disable=SC2086
	(cd "$here/bin" && exec ./vch daemon --root "$root" -H "$DOCKER_HOST" ${VCH_DAEMON_ARGS:-}) >"$dir/daemon.log" 2>&1 &
	pid=$!
	echo "$pid" >"$dir/daemon.pid"
	log "started vch daemon pid $pid on $DOCKER_HOST (log: $dir/daemon.log)"
	for i in $(seq 300); do
		docker version >/dev/null 2>&1 && break
		if ! kill -0 "$pid" 2>/dev/null || [ "$i" = 300 ]; then
			tail -c 3000 "$dir/daemon.log" >&2
			die "the vch daemon did not start"
		fi
		sleep 0.1
	done
fi
export DOCKER_REMOTE_DAEMON=1
export DOCKER_INTEGRATION_DAEMON_DEST=$dir/daemons
rm -rf "$DOCKER_INTEGRATION_DAEMON_DEST"
mkdir -p "$DOCKER_INTEGRATION_DAEMON_DEST"
# Some tests start a dockerd of their own (testutil/daemon) even against a
# remote daemon. They do not test the endpoint, and a real dockerd on this
# host (Debian's docker.io installs one) would touch the host's network:
# the tests find this stand-in first, which fails at once. Such a test that
# fails only there counts as skipped ("starts its own dockerd").
mkdir -p "$dir/nodockerd"
cat >"$dir/nodockerd/dockerd" <<'EOS'
#!/bin/sh
echo "compat.sh: no dockerd here: moby's test tried to start a daemon of its own" >&2
exit 1
EOS
chmod +x "$dir/nodockerd/dockerd"
test_path=$dir/nodockerd:$PATH
# testutil/daemon's exec roots and sockets of the daemons it tried to start.
clean_testutil_daemons() {
	local d id
	for d in $(find "$DOCKER_INTEGRATION_DAEMON_DEST" -regextype posix-extended -type d -regex '.*/d[0-9a-f]{12}' 2>/dev/null); do
		id=${d##*/}
		rm -rf "/tmp/dxr/$id" "/tmp/docker-integration/$id.sock"
	done
	rmdir /tmp/dxr /tmp/docker-integration 2>/dev/null
	return 0
}

# ---- frozen images -------------------------------------------------------------
# testutil/environment/protect.go's frozenImages must exist, or each test
# binary's TestMain tries to pull them. Nothing can be pulled here: they are
# all the endpoint's busybox image under other names.
if ! docker image inspect busybox:latest >/dev/null 2>&1; then
	[ -x "$here/bin/busybox-image" ] || die "no busybox:latest on the endpoint and bin/busybox-image not built"
	log "loading busybox:latest from bin/busybox-image"
	"$here/bin/busybox-image" -o "$dir/bb.tar" >"$logdir/busybox-image.log" 2>&1 || die "bin/busybox-image failed (log: $logdir/busybox-image.log)"
	docker load -i "$dir/bb.tar" >/dev/null || die "docker load -i $dir/bb.tar failed"
fi
for img in busybox:glibc hello-world:frozen debian:bookworm-slim hello-world:amd64 hello-world:arm64; do
	docker image inspect "$img" >/dev/null 2>&1 && continue
	docker tag busybox:latest "$img" || die "docker tag busybox:latest $img failed"
done
# An image of another platform (TestCreatePlatformSpecificImageNoPlatform
# creates a container of arm32v7/hello-world without naming a platform):
# an empty layer imported as linux/arm/v7. Only created, never started.
if ! docker image inspect arm32v7/hello-world:latest >/dev/null 2>&1; then
	tar -cf "$dir/empty.tar" -T /dev/null
	docker import --platform linux/arm/v7 -c 'CMD ["/hello"]' "$dir/empty.tar" arm32v7/hello-world:latest >/dev/null ||
		die "docker import --platform linux/arm/v7 failed"
fi

# ---- run ---------------------------------------------------------------------------
results=$dir/results.tsv
: >"$results"
fmt_dur() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fs", b - a }'; }
# reason: the first assertion/failure message of a failed test's log, on one
# line (of a multi-line gotest.tools message, the changed lines of its diff
# and the field they are in, or its first two lines).
reason_awk='
function out(s) { gsub(/\302\240/, " ", s); gsub(/[ \t]+/, " ", s); print substr(s, 1, 300); done = 1; exit }
!found && (/assertion failed|Error Trace|timeout hit after|^panic: / || /\.go:[0-9]+: .*(Failed|failed|error|Error|expected|unexpected)/) {
	found = 1; line = $0; sub(/^[ \t]+/, "", line)
	if (line !~ /: *$/) out(line)
	next
}
found {
	# a continuation is indented deeper than "    x_test.go:N: "
	if ($0 !~ /^        / && $0 !~ /^[ \t]*$/) out(line (nd ? diff : plain))
	l = $0; gsub(/\302\240/, " ", l); sub(/^[ \t]+/, "", l)
	if (l ~ /^[-+] /) {
		if (!nd && field != "") diff = " " field
		diff = diff " " l; nd++
	} else {
		if (match(l, /^[A-Za-z_][A-Za-z0-9_]*: /)) field = substr(l, 1, RLENGTH - 1)
		if (l != "" && l !~ /^(---|\+\+\+) / && nplain < 2) { plain = plain " " l; nplain++ }
	}
	if (nd >= 4) out(line diff)
}
END { if (!done && found) out(line (nd ? diff : plain)) }
'
reason() {
	local r
	r=$(LC_ALL=C awk "$reason_awk" "$1")
	if [ -z "$r" ]; then
		# else the last file:line message before the first "--- FAIL"
		r=$(awk '/^--- FAIL/ { exit } /^ +[A-Za-z0-9_]+\.go:[0-9]+: / { l = $0 } END { print l }' "$1")
	fi
	[ -n "$r" ] || r=$(grep -v '^[[:space:]]*$' "$1" | tail -n1)
	echo "$r" | sed -e 's/^[[:space:]]*//' -e 's/\t/ /g' | cut -c1-300
}
clean_endpoint() {
	# Only on the daemon we started: what a timed-out test could not clean.
	[ -n "$pid" ] || return 0
	local ids
	ids=$(docker ps -aq 2>/dev/null)
	[ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
	return 0
}

for p in $pkgs; do
	bin=$bindir/$(pkgname "$p").test
	pdir=$tree/integration/$p
	mkdir -p "$logdir/$p"
	# go test runs a test binary in its package's directory (testdata/).
	if ! tests=$(cd "$pdir" && "$bin" -test.list . 2>"$logdir/$p/list.err"); then
		log "integration/$p: -test.list failed (TestMain: $(grep -m1 '^panic' "$logdir/$p/list.err")); taking the tests from the binary's symbols"
		tests=$(go tool nm "$bin" | awk '$2 == "T" { print $3 }' |
			sed -n "s#^github.com/docker/docker/integration/$p\.\(Test[A-Za-z0-9_]*\)\$#\1#p" | grep -v '^TestMain$' | sort -u)
	fi
	for t in $(echo "$tests" | grep -E '^Test' | grep -E -- "$run_re"); do
		tl=$logdir/$p/$t.log
		t0=$(date +%s.%N)
		(cd "$pdir" && PATH=$test_path timeout -k 10s "$hard_timeout" "$bin" -test.run "^$t\$" -test.v -test.timeout "$test_timeout") >"$tl" 2>&1
		rc=$?
		t1=$(date +%s.%N)
		if [ $rc = 0 ] && grep -q "^--- SKIP: $t " "$tl"; then
			st=SKIP
		elif [ $rc = 0 ] && grep -q "^--- PASS: $t " "$tl"; then
			st=PASS
		elif [ $rc = 0 ] && grep -q '^testing: warning: no tests to run' "$tl"; then
			st=SKIP # not built for this platform
		else
			st=FAIL
		fi
		d=$(fmt_dur "$t0" "$t1")
		why=
		if [ $st = FAIL ] && grep -qE '^ +[A-Za-z0-9_]+\.go:[0-9]+: \[d[0-9a-f]+\] failed to start daemon with arguments' "$tl" &&
			[ "$(reason "$tl" | grep -c 'failed to start daemon with arguments')" = 1 ] &&
			! grep -E 'assertion failed|timeout hit after|^panic: ' "$tl" | grep -qv 'failed to start daemon with arguments'; then
			st=SKIP
			why="starts its own dockerd: $(reason "$tl" | cut -c1-120)"
		fi
		case $st in
		FAIL)
			why=$(reason "$tl")
			[ $rc = 124 ] || [ $rc = 137 ] && why="killed after $hard_timeout (rc $rc); $why"
			echo "FAIL $p $t $d  # $why"
			clean_endpoint
			;;
		SKIP)
			case $why in
			"starts its own dockerd"*) echo "SKIP $p $t $d  # starts its own dockerd" ;;
			*)
				# the skip message: the last file:line line before "--- SKIP"
				why=$(awk '/^--- SKIP/ { exit } /^ +[A-Za-z0-9_]+\.go:[0-9]+: / { l = $0 } END { print l }' "$tl" | sed 's/^[[:space:]]*//' | cut -c1-300)
				echo "SKIP $p $t $d"
				;;
			esac
			;;
		*) echo "$st $p $t $d" ;;
		esac
		printf '%s\t%s\t%s\t%s\t%s\n' "$st" "$p" "$t" "$d" "$why" >>"$results"
	done
done

# ---- summary -------------------------------------------------------------------
awk -F'\t' '
	{ n[$1]++; tot++ }
	$1 == "SKIP" && $5 ~ /^starts its own dockerd/ { own++ }
	END {
		ran = n["PASS"] + n["FAIL"]
		pct = ran ? 100 * n["PASS"] / ran : 0
		printf "compat: %d passed, %d failed, %d skipped (%d of them start their own dockerd) of %d tests; %.1f%% of the %d that ran passed\n",
			n["PASS"], n["FAIL"], n["SKIP"], own, tot, pct, ran
	}' "$results"
# The same as a markdown table (for docs/notes.md).
{
	echo "| Package | Test | Result | Reason (first failure in the log) |"
	echo "|---|---|---|---|"
	awk -F'\t' '{ r = $5; gsub(/\|/, "\\|", r); gsub(/`/, "'"'"'", r); printf "| %s | %s | %s | %s |\n", $2, $3, $1, ($1 == "FAIL" ? "`" r "`" : ($5 ~ /^starts its own dockerd/ ? "starts its own dockerd" : "")) }' "$results"
} >"$dir/results.md"
log "per-test logs in $logdir/PKG/TEST.log; results in $results and $dir/results.md"
exit 0
