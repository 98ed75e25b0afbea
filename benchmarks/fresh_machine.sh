#!/usr/bin/env bash
# Fresh-machine cost (issue 18): clone this repository into a temporary folder and, with an empty pip
# cache and an empty embedding cache, time `make venv` (the install), report the venv's size and what
# pip compiled from source, then time `make book` and `make test`, and the optional benchmark extras.
# Needs network access to PyPI (and Debian for the browser checks). Run it on a quiet machine:
#
#     bash benchmarks/fresh_machine.sh            # everything (install, book, test): about an hour
#     bash benchmarks/fresh_machine.sh --no-test  # install and book only
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/fresh_machine.XXXXXX)
git clone --quiet "$repo" "$work/clone"
cd "$work/clone"
export PIP_CACHE_DIR="$work/pip-cache" IMAGE_SEARCH_CACHE="$work/cache" XDG_CACHE_HOME="$work/xdg"
unset PIP_NO_CACHE_DIR
log="$work/install.log"
rows=()
timed() {  # timed LABEL COMMAND...: run, keep the log, add a row "| LABEL | seconds | rc |"
    local label=$1; shift
    local start=$(date +%s) rc=0
    "$@" >>"$log" 2>&1 || rc=$?
    rows+=("| $label | $(( $(date +%s) - start )) | $rc |")
}
echo "# fresh_machine: $(git -C "$repo" rev-parse --short HEAD), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "pip: ${PIP_INDEX_URL:-PyPI}${PIP_FIND_LINKS:+, find-links $PIP_FIND_LINKS (local wheels: not a cold install)}"
timed "make venv (pip install -r requirements.txt, empty pip cache)" make venv
timed "pip install -r requirements-bench.txt (hnswlib, usearch)" .venv/bin/python -m pip install -r requirements-bench.txt
timed "make book" make book
[ "${1:-}" = "--no-test" ] || timed "make test (cold embedding cache)" make test
echo
echo "| step | wall s | rc |"
echo "|:--|--:|--:|"
printf '%s\n' "${rows[@]}"
echo
echo "- venv: $(du -sh .venv | cut -f1); pip cache after install: $(du -sh "$PIP_CACHE_DIR" | cut -f1); embedding cache: $(du -sh "$IMAGE_SEARCH_CACHE" 2>/dev/null | cut -f1)"
echo "- largest packages in the venv:"
du -s .venv/lib/python*/site-packages/* | sort -rn | head -8 | awk '{printf "  - %s %.0f MB\n", $2, $1 / 1024}' | sed "s|.venv/lib/python[0-9.]*/site-packages/||"
echo "- built from source at install (a wheel tagged for this machine only, e.g. linux_x86_64, not manylinux):"
grep -l -E "^Tag: .*-linux_" .venv/lib/python*/site-packages/*.dist-info/WHEEL 2>/dev/null \
    | sed -E 's|.*/site-packages/([^/]*)\.dist-info/WHEEL|  - \1|' || echo "  - nothing"
echo "- full log: $log"
