#!/usr/bin/env bash
# The `pynisher` command line by example: a wall-time limit, a CPU-time
# limit, a memory limit, the exit codes, and the JSON report. Each step says
# which exit code it expects; the script exits non-zero if one differs.
#
#   bash examples/cli.sh                                  # `pynisher` from PATH
#   PYNISHER=target/release/pynisher bash examples/cli.sh
#
# See docs/cli.md for every option.

# The commands in single quotes are expanded by the limited shell, not here.
# shellcheck disable=SC2016
set -u

PYNISHER=${PYNISHER:-pynisher}
failures=0

# Prints a pynisher command line as one would type it (for display only: it
# quotes with '...' and assumes no argument holds a single quote).
show() {
    local line="\$ pynisher" arg
    for arg in "$@"; do
        if [[ $arg =~ ^[A-Za-z0-9_./:=,+-]+$ ]]; then
            line+=" $arg"
        else
            line+=" '$arg'"
        fi
    done
    echo "$line"
}

# step EXPECTED_CODE DESCRIPTION -- PYNISHER_ARGS...
# Runs pynisher with --verbose (it prints why the command stopped to stderr)
# and checks its exit code.
step() {
    local expected=$1 description=$2
    shift 3
    echo
    echo "== $description"
    show "$@"
    "$PYNISHER" --verbose "$@"
    local code=$?
    if [ "$code" -eq "$expected" ]; then
        echo "-> exit code $code, as expected"
    else
        echo "-> exit code $code, expected $expected" >&2
        failures=$((failures + 1))
    fi
}

# 1. Wall time: `sleep 10` gets SIGTERM after half a second (SIGKILL a grace
#    period later if it ignored that). Exit code 124, as with GNU timeout.
step 124 "a wall-time limit on sleep" -- --wall-time 500ms -- sleep 10

# 2. CPU time: a busy shell loop is stopped once the whole process tree has
#    used 0.5 s of CPU (user + system). Also 124.
step 124 "a CPU-time limit on a busy shell loop" -- \
    --cpu-time 0.5s --wall-time 60s -- bash -c 'while :; do :; done'

# 3. Memory, resident mode (the default): the resident memory plus swap of
#    the whole process tree is sampled, and the tree is killed once it passes
#    the limit. Exit code 122. The shell here reads 300 MB into a variable.
step 122 "a memory limit (resident, the default) on a shell that reads 300 MB" -- \
    --memory 64MB -- \
    bash -c 'x=$(head -c 300000000 /dev/zero | tr "\0" x); echo "${#x} bytes"'

#    Memory, address-space mode: RLIMIT_AS makes the allocation itself fail,
#    and the command reports it its own way; pynisher passes on the
#    command's exit code (bash's is 2 when it cannot allocate).
step 2 "a memory limit (address-space mode): the command sees the failed allocation" -- \
    --memory 64MB --memory-mode address-space -- \
    bash -c 'x=$(head -c 300000000 /dev/zero | tr "\0" x); echo "${#x} bytes"'

# 4. Exit codes: the command's own, 128 + N for a signal, and pynisher's own
#    for commands that cannot start and for bad options.
step 0 "a command that succeeds" -- --wall-time 10s -- true
step 3 "the command's own exit code" -- -- sh -c 'exit 3'
step 143 "killed by a signal it sent itself: 128 + 15 (SIGTERM)" -- -- sh -c 'kill -TERM $$'
step 127 "a command that does not exist" -- -- no-such-command-pynisher-example
step 126 "a file that cannot be executed" -- -- /dev/null
step 125 "a bad option: pynisher names it" -- --wall-time soon -- true

# 5. The JSON report: `--json -` writes it to stdout after the command's own
#    output (`--json PATH` writes it to a file).
echo
echo "== a JSON report on stdout"
show --wall-time 300ms --json - -- sh -c 'echo started; sleep 10'
"$PYNISHER" --wall-time 300ms --json - -- sh -c 'echo started; sleep 10'
code=$?
if [ "$code" -ne 124 ]; then
    echo "-> exit code $code, expected 124" >&2
    failures=$((failures + 1))
fi

echo
if [ "$failures" -ne 0 ]; then
    echo "$failures step(s) gave an unexpected exit code" >&2
    exit 1
fi
echo "every step gave the exit code it expected"
