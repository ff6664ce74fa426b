"""The TSV results log: round trip, and a clear error naming the line for every defect."""

import math

import pytest

from autosteer import LogFormatError, SteerCandidate, SteerVector, read_log
from autosteer.log import COLUMNS, HEADER, LogWriter, run_id_of

CONFIG = {"seed": 1, "metric": "custom", "space": {"texts": ["a"]}}
RUN_ID = run_id_of(CONFIG)
CAND = SteerCandidate((SteerVector(2, 0.35, "logical"), SteerVector(4, -0.1, "confused", {"type": "warmup", "steps": 3})))


def row(i, status, score, best, cand=CAND, holdout=None, error=None):
    return {
        "iteration": i,
        "timestamp": "2026-11-25T21:30:05Z",
        "elapsed_s": 1.25 * i,
        "score": score,
        "best_score": best,
        "status": status,
        "n_vectors": len(cand),
        "candidate": cand,
        "description": cand.describe() if i else "baseline (no steering)",
        "holdout_score": holdout,
        "error": error,
    }


def write_log(path, rows=None):
    rows = rows or [
        row(0, "baseline", 1 / 3, 1 / 3, SteerCandidate(), holdout=0.1),
        row(1, "keep", 2 / 3, 2 / 3, holdout=0.7),
        row(2, "discard", 0.5, 2 / 3),
        row(3, "crash", None, 2 / 3, error="RuntimeError: boom\n\tat line 3 \\ end"),
        row(4, "crash", math.nan, 2 / 3, error="non-finite score: nan"),
    ]
    with LogWriter(path) as w:
        for r in rows:
            w.write_row(r, RUN_ID, CONFIG if r["status"] == "baseline" else None)
    return rows


def test_round_trip_is_exact(tmp_path):
    p = tmp_path / "log.tsv"
    rows = write_log(p)
    text = p.read_text()
    lines = text.split("\n")
    assert lines[0] == HEADER and text.endswith("\n")
    assert all(len(line.split("\t")) == len(COLUMNS) for line in lines[1:-1])
    hist = read_log(p)
    assert hist.run_id == RUN_ID and hist.config == CONFIG and hist.baseline_score == 1 / 3
    assert len(hist) == len(rows)
    for got, want in zip(hist, rows):
        for k, v in want.items():
            if isinstance(v, float) and math.isnan(v):
                assert math.isnan(got[k])
            else:
                assert got[k] == v, k  # floats come back bit for bit; text is unescaped
    assert hist[1]["candidate"] == CAND
    assert hist[3]["error"] == "RuntimeError: boom\n\tat line 3 \\ end"
    assert hist[2]["holdout_score"] is None and hist[2]["error"] is None


def test_writer_flushes_each_row(tmp_path):
    p = tmp_path / "log.tsv"
    w = LogWriter(p)
    w.write_row(row(0, "baseline", 0.5, 0.5, SteerCandidate()), RUN_ID, CONFIG)
    assert len(read_log(p)) == 1  # visible before close
    w.close()
    with LogWriter(p, append=True) as w:
        w.write_row(row(1, "discard", 0.25, 0.5), RUN_ID)
    assert [r["status"] for r in read_log(p)] == ["baseline", "discard"]


def corrupt(tmp_path, edit):
    p = tmp_path / "log.tsv"
    write_log(p)
    lines = p.read_text().split("\n")
    lines = edit(lines)
    p.write_text("\n".join(lines))
    return p


def set_field(line, name, value):
    f = line.split("\t")
    f[COLUMNS.index(name)] = value
    return "\t".join(f)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda ls: ["iteration,timestamp,score"] + ls[1:], "line 1: not an AutoSteer results log"),
        (lambda ls: ls[:2] + [ls[2] + "\textra"] + ls[3:], "line 3: expected 13 tab-separated fields, got 14"),
        (lambda ls: ls[:3] + ls[4:], "line 4: expected iteration 2, got 3"),
        (lambda ls: ls[:2] + [set_field(ls[2], "iteration", "one")] + ls[3:], "line 3: iteration 'one'"),
        (lambda ls: ls[:3] + [set_field(ls[3], "status", "maybe")] + ls[4:], "line 4: unknown status 'maybe'"),
        (lambda ls: ls[:3] + [set_field(ls[3], "status", "baseline")] + ls[4:], "line 4: the baseline must be"),
        (lambda ls: [ls[0]] + ls[2:], "line 2: the baseline must be"),
        (lambda ls: ls[:2] + [set_field(ls[2], "candidate", "{oops")] + ls[3:], "line 3: bad candidate"),
        (lambda ls: ls[:2] + [set_field(ls[2], "candidate", '{"vectors": []}')] + ls[3:], "line 3: .*canonical"),
        (lambda ls: ls[:2] + [set_field(ls[2], "n_vectors", "5")] + ls[3:], "line 3: n_vectors is 5"),
        (lambda ls: ls[:2] + [set_field(ls[2], "score", "high")] + ls[3:], "line 3: score 'high' is not a number"),
        (lambda ls: ls[:2] + [set_field(ls[2], "score", "")] + ls[3:], "line 3: score is empty"),
        (lambda ls: ls[:2] + [set_field(ls[2], "score", "nan")] + ls[3:], "line 3: a keep row needs a finite score"),
        (lambda ls: ls[:3] + [set_field(ls[3], "run_id", "0123456789abcdef")] + ls[4:], "line 4: run_id .* differs"),
        (lambda ls: [ls[0], set_field(ls[1], "config", '{"seed": 2}')] + ls[2:], "line 2: run_id .* does not match"),
        (lambda ls: [ls[0], set_field(ls[1], "config", "{")] + ls[2:], "line 2: .*not valid JSON"),
        (lambda ls: ls[:2] + [set_field(ls[2], "config", "{}")] + ls[3:], "line 3: only the baseline row"),
        (lambda ls: ls[:-2] + ["", ls[-2], ""], "line 6: expected 13"),  # a blank line
        (lambda ls: ls[:-1], "line 6: incomplete row"),  # last line without its line end
    ],
)
def test_corrupt_logs_name_the_line(tmp_path, edit, match):
    p = corrupt(tmp_path, edit)
    with pytest.raises(LogFormatError, match=match) as info:
        read_log(p)
    assert str(p) in str(info.value)


def test_incomplete_last_line_can_be_skipped(tmp_path):
    p = tmp_path / "log.tsv"
    write_log(p)
    full = p.read_bytes()
    p.write_bytes(full + b"5\t2026-11-25T21:30:05Z\t3.0\t0.")
    hist = read_log(p, allow_incomplete=True)
    assert len(hist) == 5 and hist.incomplete_tail == len(full)


def test_empty_and_header_only(tmp_path):
    p = tmp_path / "log.tsv"
    p.write_text("")
    with pytest.raises(LogFormatError, match="line 1: the file is empty"):
        read_log(p)
    p.write_text(HEADER + "\n")
    hist = read_log(p)
    assert list(hist) == [] and hist.run_id is None and hist.baseline_score is None
    with pytest.raises(FileNotFoundError):
        read_log(tmp_path / "missing.tsv")


def test_plot_history_from_log_and_rows(tmp_path):
    pytest.importorskip("matplotlib")
    from autosteer import plot_history

    p = tmp_path / "log.tsv"
    write_log(p)
    out = tmp_path / "history.png"
    fig = plot_history(p, out)
    assert out.stat().st_size > 1000
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(s.startswith("keep (1)") for s in labels)
    assert any(s.startswith("discard (1)") for s in labels)
    assert any(s.startswith("crash (2)") for s in labels)
    assert any(s.startswith("baseline") for s in labels)
    assert "custom" in ax.get_ylabel()
    fig2 = plot_history({"history": read_log(p), "metric": "perplexity", "lower_is_better": True})
    assert "lower is better" in fig2.axes[0].get_ylabel()
    with pytest.raises(ValueError):
        plot_history([])
