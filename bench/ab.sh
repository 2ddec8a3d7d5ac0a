#!/bin/sh
# The four benchmarks on two commits, alternated, as one table: bench/ab.sh OLD NEW
# [--pairs K] [--only bench,publish,saga,replay] [--short] [--out DIR] (bench/ab.py says how).
exec "$(dirname "$0")/../.venv/bin/python" "$(dirname "$0")/ab.py" "$@"
