"""docs/search.md names every metric, strategy and keep rule and every option each declares
(its examples run in test_examples.py)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "search.md").read_text(encoding="utf-8")


def test_every_declared_option_and_name_is_documented():
    from autosteer.search.keep import KEEP_RULES
    from autosteer.search.metrics import METRICS
    from autosteer.search.strategies import STRATEGIES

    for registry in (METRICS, STRATEGIES, KEEP_RULES):
        for name, cls in registry.items():
            assert f"`{name}`" in PAGE and cls.__name__ in PAGE, name
            for option in cls.options:
                assert f"`{option.name}`" in PAGE, (name, option.name)
