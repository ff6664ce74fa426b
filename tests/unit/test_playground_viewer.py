"""The search viewer's data (no browser): a snapshot of a log written here by hand, re-read only
when the file changes, a bad line named with its text, and the held-out prompts check."""

import math

import pytest

from autosteer import InvalidArgumentError, SteerCandidate, SteerVector
from autosteer._canonical import digest
from autosteer.search.log import FORMAT_VERSION, LogWriter
from autosteer.search.trial import TrialRecord
from autosteer.serve.playground.app import holdout_for_log
from autosteer.serve.playground.viewer import LogWatch, log_snapshot

CONFIG = {"format": FORMAT_VERSION, "seed": 1, "metric": "steered_concept", "lower_is_better": False,
          "min_improvement": 0.0, "keep_rule": "mean", "space": {"texts": ["a"]}, "holdout": None}
A = SteerCandidate((SteerVector(2, 0.35, "logical"),))
B = SteerCandidate((SteerVector(1, 0.2, "precise", {"type": "warmup", "steps": 3, "start": 0.0}),))


def rows():
    def r(i, status, score, cand, **kw):
        return TrialRecord(iteration=i, status=status, candidate=cand, score=score, round=i,
                           timestamp="2026-12-03T03:00:00Z", elapsed_s=float(i), **kw)
    return [
        r(0, "baseline", 0.25, SteerCandidate(), holdout_score=0.2, details={"fluency": 2.0, "concept_rate": 0.0}),
        r(1, "discard", 0.1, B, details={"fluency": 2.5, "concept_rate": 0.1}),
        r(2, "keep", 0.5, A, holdout_score=0.4, details={"fluency": 2.25, "concept_rate": 0.5, "zeta": 1.0,
                                                         "holdout_concept_rate": 0.25}),
        r(3, "crash", math.nan, B, error="RuntimeError: boom"),
    ]


def write(path, records):
    with LogWriter(path) as w:
        for rec in records:
            w.write(rec, CONFIG if rec.status == "baseline" else None)


def test_snapshot_counts_and_best(tmp_path):
    path = tmp_path / "log.tsv"
    write(path, rows())
    snap = log_snapshot(path)
    assert snap["ok"] and snap["error"] is None
    assert (snap["trials"], snap["trials_text"], snap["keeps"], snap["discards"], snap["crashes"]) == (
        3, "3 trials", 1, 1, 1)
    assert (snap["baseline_score"], snap["best_score"], snap["best_iteration"]) == (0.25, 0.5, 2)
    assert (snap["baseline_holdout"], snap["best_holdout"]) == (0.2, 0.4)
    assert snap["best_code"] == ('from autosteer import Steer\nsteered = Steer(model, tokenizer)\n'
                                 'steered.add(layer_idx=2, coeff=0.35, text="logical")')
    assert snap["best_candidate"] == {"vectors": [{"layer_idx": 2, "coeff": 0.35, "text": "logical",
                                                   "schedule": None}]}
    assert [p["status"] for p in snap["points"]] == ["baseline", "discard", "keep", "crash"]
    assert [p["best"] for p in snap["points"]] == [0.25, 0.25, 0.5, 0.5]
    assert snap["points"][3]["score"] is None  # NaN is not JSON: a crash has no score to plot
    assert snap["axes"] == ["concept_rate", "fluency"]  # the known measurements (held-out ones drawn beside)
    assert snap["points"][2]["details"]["holdout_concept_rate"] == 0.25
    import json

    json.dumps(snap, allow_nan=False)  # what the route sends: strict JSON


def test_watch_rereads_only_a_changed_file(tmp_path):
    path = tmp_path / "log.tsv"
    records = rows()
    write(path, records[:2])
    watch = LogWatch(path)
    first = watch.snapshot()
    assert first["trials"] == 1 and watch.snapshot()["version"] == first["version"]
    write(path, records)
    second = watch.snapshot()
    assert second["trials"] == 3 and second["version"] == first["version"] + 1


def test_a_bad_line_is_named_with_its_text(tmp_path):
    path = tmp_path / "log.tsv"
    write(path, rows())
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("4\t4\tgarbage\n")
    snap = log_snapshot(path)
    assert not snap["ok"]
    assert "line 6" in snap["error"]["message"] and snap["error"]["line"] == 6
    assert snap["error"]["text"] == "4\t4\tgarbage"
    missing = log_snapshot(tmp_path / "none.tsv")
    assert not missing["ok"] and "does not exist" in missing["error"]["message"]


def test_holdout_file_must_be_the_searched_one():
    prompts, expected = ["2 plus 2 =", "3 plus 1 ="], ["4", "4"]
    config = {"holdout": digest([prompts, expected])}
    holdout_for_log(config, prompts, expected, "h.jsonl")  # the same prompts: accepted
    with pytest.raises(InvalidArgumentError, match="not the prompts the search held out"):
        holdout_for_log(config, prompts[:1], expected[:1], "h.jsonl")
    with pytest.raises(InvalidArgumentError, match="held out no prompts"):
        holdout_for_log({"holdout": None}, prompts, expected, "h.jsonl")


@pytest.mark.parametrize("extra, message", [
    (["--holdout", "h.txt"], "--holdout goes with --log"),
    (["--log", "log.tsv", "--holdout", "h.txt"], "held out no prompts"),
    (["--log", "missing.tsv", "--holdout", "h.txt"], "start the search first"),
    (["--log", "no/such/dir/log.tsv"], "its folder does not exist"),
])
def test_serve_refuses_bad_viewer_options_before_loading_a_model(extra, message, tmp_path, monkeypatch, capsys):
    from autosteer import cli

    monkeypatch.chdir(tmp_path)
    write(tmp_path / "log.tsv", rows())
    (tmp_path / "h.txt").write_text("2 plus 2 =\n")
    assert cli.main(["serve", "--model", "organism", *extra]) == cli.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_steering_code_for_a_raw_direction():
    from autosteer.serve.playground.app import steering_code
    from autosteer.serve.steering import VectorSpec

    torch = pytest.importorskip("torch")
    text = VectorSpec(1, 0.5, "text", "calm", None)
    raw = VectorSpec(3, -0.25, "vector", torch.zeros(4), {"type": "warmup", "steps": 2, "start": 0.0})
    assert steering_code([]) == "# no steering: the model as it is"
    assert steering_code([text, raw]).split("\n") == [
        "from autosteer import Steer, WarmupSchedule",
        "steered = Steer(model, tokenizer)",
        'steered.add(layer_idx=1, coeff=0.5, text="calm")',
        "# a direction from a vector file: 4 floats (a torch tensor)",
        ("steered.add(layer_idx=3, coeff=-0.25, vector=direction_3, "
         "coeff_schedule=WarmupSchedule(steps=2, start=0.0))"),
    ]
