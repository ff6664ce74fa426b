#!/usr/bin/env bash
# Every test of the project, as the README's test command and CI run them:
#   1. the plain-C unit tests of csrc/ under ASan + UBSan
#   2. ruff (lint over autosteer/, benchmarks/, scripts/ and tests/; format check over autosteer/) and mypy, then the Python test suite (warnings are errors, see pyproject.toml)
#   3. the C-heavy Python tests again against an ASan + UBSan build of autosteer._C
#   4. the documentation site (mkdocs.yml, docs/), strict: a warning fails
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== Browser for the playground tests (Debian's chromium and chromium-driver)"
bash tests/install_browser.sh
export AUTOSTEER_REQUIRE_BROWSER=1
echo "== C unit tests (ASan/UBSan)"
bash tests/c/run_c_tests.sh
echo "== Lint and format check (ruff; its settings are [tool.ruff] in pyproject.toml)"
python -m ruff check autosteer benchmarks scripts tests
python -m ruff format --check autosteer
echo "== Type check (mypy; its settings are [tool.mypy] in pyproject.toml)"
python -m mypy
echo "== Python tests"
python -m pytest -q tests "$@"
echo "== Python tests against the sanitizer build of autosteer._C"
bash tests/c/run_sanitized_python.sh "tests/unit/test_steer.py::test_generate_matches_reference_every_arch" "tests/unit/test_steer.py::test_per_row_steering_equals_each_group_alone"
echo "== Documentation site (mkdocs build --strict)"
site="$(mktemp -d)"  # not --quiet: it hides the warnings that --strict counts
NO_MKDOCS_2_WARNING=1 python -m mkdocs build --strict --site-dir "$site"
rm -rf "$site"
