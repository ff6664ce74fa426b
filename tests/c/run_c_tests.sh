#!/usr/bin/env bash
# Build and run the plain-C unit tests of csrc/ under AddressSanitizer and
# UndefinedBehaviorSanitizer.  Usage: tests/c/run_c_tests.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/build"
mkdir -p "$out"
cc="${CC:-gcc}"
flags=(-std=c11 -O1 -g -Wall -Wextra -Werror -fno-omit-frame-pointer
       -fsanitize=address,undefined -fno-sanitize-recover=all -I"$root/csrc")
status=0
for t in test_schedule test_kernel; do
    "$cc" "${flags[@]}" "$here/$t.c" -o "$out/$t" -lm
    if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$out/$t"; then
        status=1
    fi
done
exit $status
