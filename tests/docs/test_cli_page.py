"""docs/cli.md shows the usage of every command exactly as the parser prints it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_cli_page_shows_what_the_parser_prints():
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "docs" / "cli_usage.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
