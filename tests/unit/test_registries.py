"""The three registries (metrics, strategies, keep rules) share one decorator: a new name is
added and found by name, a taken or empty name is refused, and the metric registry also
checks the class's ``expected``."""

import pytest

from autosteer.errors import InvalidArgumentError
from autosteer.search import keep, metrics
from autosteer.search.strategies import base


@pytest.mark.parametrize("module, table, cls, make", [
    (metrics, metrics.METRICS, metrics.Metric, metrics.as_metric),
    (base, base.STRATEGIES, base.Strategy, base.as_strategy),
    (keep, keep.KEEP_RULES, keep.KeepRule, keep.as_keep_rule),
])
def test_register_adds_a_new_name_and_refuses_a_taken_one(module, table, cls, make):
    taken = next(iter(table))
    Dup = type("Dup", (cls,), {"name": taken, "options": ()})
    with pytest.raises(InvalidArgumentError, match=f"named '{taken}' is already registered"):
        module.register(Dup)
    Empty = type("Empty", (cls,), {"name": "", "options": ()})
    with pytest.raises(InvalidArgumentError, match="already registered or the name is empty"):
        module.register(Empty)
    New = type("New", (cls,), {"name": "zz_test_new", "options": ()})
    try:
        assert module.register(New) is New and table["zz_test_new"] is New
        assert type(make("zz_test_new")) is New
    finally:
        table.pop("zz_test_new", None)


def test_a_metric_with_a_bad_expected_is_refused():
    Bad = type("Bad", (metrics.Metric,), {"name": "zz_bad", "options": (), "expected": "sometimes"})
    with pytest.raises(InvalidArgumentError, match="Bad.expected must be required/optional/unused"):
        metrics.register(Bad)
    assert "zz_bad" not in metrics.METRICS
