"""docs/search.md: its Python examples run (in order, one namespace), a block followed by
"prints" prints exactly that, and every option a metric, strategy or keep rule declares is on
the page."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "search.md").read_text(encoding="utf-8")


def test_the_examples_run_and_print_what_the_page_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = list(re.finditer(r"```python\n(.*?)```(?:\n\nprints\n\n```text\n(.*?)```)?", PAGE, re.S))
    assert len(blocks) >= 3
    namespace: dict = {}
    for m in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(m.group(1), "docs/search.md", "exec"), namespace)  # noqa: S102 - the page's own code
        if m.group(2) is not None:
            assert out.getvalue() == m.group(2)


def test_every_declared_option_and_name_is_documented():
    from autosteer.search.keep import KEEP_RULES
    from autosteer.search.metrics import METRICS
    from autosteer.search.strategies import STRATEGIES

    for registry in (METRICS, STRATEGIES, KEEP_RULES):
        for name, cls in registry.items():
            assert f"`{name}`" in PAGE and cls.__name__ in PAGE, name
            for option in cls.options:
                assert f"`{option.name}`" in PAGE, (name, option.name)
