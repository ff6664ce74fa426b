#!/usr/bin/env bash
# Build autosteer._C with ASan+UBSan into a scratch copy of the repository and
# run the tests that drive the C code hardest against it.
# Usage: tests/c/run_sanitized_python.sh [pytest args...]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$root/csrc" "$root/autosteer" "$root/tests" "$root/setup.py" "$root/pyproject.toml" "$work/"
cp "$root/README.md" "$work/" 2>/dev/null || touch "$work/README.md"
rm -f "$work"/autosteer/_C*.so
cd "$work"
AUTOSTEER_SANITIZE=1 python setup.py -q build_ext --inplace >/dev/null
asan="$(gcc -print-file-name=libasan.so)"
ubsan="$(gcc -print-file-name=libubsan.so)"
# Python and torch keep allocations alive at exit by design: leak checking is
# done by the reference-count tests; ASan checks every memory access here.
LD_PRELOAD="$asan:$ubsan" ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 PYTHONPATH="$work" \
    python -c "import autosteer._C as c, sys; assert c.__file__.startswith(sys.argv[1]), c.__file__; print(\"sanitized build:\", c.__file__)" "$work" && \
    LD_PRELOAD="$asan:$ubsan" ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 PYTHONPATH="$work" python -m pytest -q -p no:cacheprovider tests/unit/test_kernel.py tests/unit/test_schedules.py tests/unit/test_refleaks.py "$@"
