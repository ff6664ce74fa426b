"""The results log: one TSV row per trial, written and flushed as each trial ends.

Format (UTF-8, ``\\n`` line ends, tab-separated, no quoting)::

    iteration  timestamp  elapsed_s  score  best_score  status  n_vectors  candidate  description  holdout_score  error  run_id  config

* line 1 is the header above, so any TSV reader takes the file as is
  (``pandas.read_csv(path, sep="\\t")``);
* the ``baseline`` row (iteration 0) comes first, then one row per trial with
  status ``keep``, ``discard`` or ``crash``;
* ``timestamp`` is UTC ISO 8601 (``2026-11-25T21:30:05Z``), ``elapsed_s``
  the seconds since the run started (carried on across resumes);
* ``score`` / ``best_score`` / ``holdout_score`` are written with Python's
  shortest round-trip float repr, so reading the log back gives the very same
  floats; an empty field means "not measured" (a crash that raised has no
  score; holdout prompts are scored for the baseline and each new best only);
* ``candidate`` is the candidate's canonical JSON (sorted keys, vectors in
  canonical order), ``description`` its one-line summary;
* ``error`` holds the error of a crash; tabs, newlines and backslashes in text
  fields are escaped as ``\\t``, ``\\n``, ``\\r``, ``\\\\``;
* ``run_id`` (every row) is a short hash of the run's configuration (seed,
  metric, search space, prompts, model ...); ``config`` holds that
  configuration as JSON on the baseline row only.  Resuming checks both, so a
  log from another run is refused with a message saying what differs.

:func:`read_log` parses a log back into a :class:`LogHistory`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from typing import Any, Mapping

from autosteer.errors import AutoSteerError, LogFormatError
from autosteer.search import SteerCandidate

__all__ = ["COLUMNS", "HEADER", "LogHistory", "LogWriter", "read_log", "run_id_of"]

COLUMNS: tuple[str, ...] = (
    "iteration",
    "timestamp",
    "elapsed_s",
    "score",
    "best_score",
    "status",
    "n_vectors",
    "candidate",
    "description",
    "holdout_score",
    "error",
    "run_id",
    "config",
)
HEADER = "\t".join(COLUMNS)
STATUSES = ("baseline", "keep", "discard", "crash")


def run_id_of(config: Mapping[str, Any]) -> str:
    """Short hash (16 hex digits) of a run configuration's canonical JSON."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _escape(s: str | None) -> str:
    if not s:
        return ""
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _unescape(s: str) -> str:
    out = []
    i = 0
    table = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in table:
            out.append(table[s[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _fmt_float(x: float | None) -> str:
    if x is None:
        return ""
    return repr(float(x))


def format_row(row: Mapping[str, Any], run_id: str, config: Mapping[str, Any] | None = None) -> str:
    """One log line (with its ``\\n``) for a history row."""
    cand: SteerCandidate = row["candidate"]
    fields = [
        str(int(row["iteration"])),
        row["timestamp"],
        f"{float(row['elapsed_s']):.3f}",
        _fmt_float(row["score"]),
        _fmt_float(row["best_score"]),
        row["status"],
        str(len(cand)),
        cand.key(),
        _escape(row["description"]),
        _fmt_float(row.get("holdout_score")),
        _escape(row.get("error")),
        run_id,
        "" if config is None else json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
    ]
    return "\t".join(fields) + "\n"


class LogWriter:
    """Append rows to a results log, flushing each one.

    ``LogWriter(path)`` truncates the file and writes the header;
    ``LogWriter(path, append=True)`` appends to an existing log.
    """

    def __init__(self, path: str | os.PathLike, *, append: bool = False) -> None:
        self.path = os.fspath(path)
        self._f: io.TextIOBase | None = open(self.path, "a" if append else "w", encoding="utf-8", newline="")
        if not append:
            self._write(HEADER + "\n")

    def _write(self, text: str) -> None:
        if self._f is None:
            raise ValueError(f"the log {self.path} is closed")
        self._f.write(text)
        self._f.flush()

    def write_row(self, row: Mapping[str, Any], run_id: str, config: Mapping[str, Any] | None = None) -> None:
        """Write one row and flush it to the OS."""
        self._write(format_row(row, run_id, config))

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> "LogWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogHistory(list):
    """The rows of a results log, as a list of dicts.

    Each row: ``iteration`` (int), ``timestamp`` (str), ``elapsed_s`` (float),
    ``score`` (float or None), ``best_score`` (float), ``status`` (str),
    ``n_vectors`` (int), ``candidate`` (:class:`SteerCandidate`),
    ``description`` (str), ``holdout_score`` (float or None), ``error``
    (str or None).  Attributes: ``path``, ``run_id``, ``config`` (dict, the
    baseline row's configuration; None for a log with no rows) and
    ``incomplete_tail`` (byte offset where an incomplete last line starts,
    when ``read_log(..., allow_incomplete=True)`` skipped one; else None).
    """

    path: str
    run_id: str | None
    config: dict[str, Any] | None
    incomplete_tail: int | None

    @property
    def baseline_score(self) -> float | None:
        return self[0]["score"] if self else None


def _parse_float(text: str, name: str, where: str, *, optional: bool) -> float | None:
    if text == "":
        if optional:
            return None
        raise LogFormatError(f"{where}: {name} is empty")
    try:
        return float(text)
    except ValueError:
        raise LogFormatError(f"{where}: {name} {text!r} is not a number") from None


def read_log(path: str | os.PathLike, *, allow_incomplete: bool = False) -> LogHistory:
    """Read a results log written by :class:`autosteer.AutoSteerRunner`.

    Returns a :class:`LogHistory` (a list of row dicts).  Raises
    :class:`LogFormatError` naming the file and line when the file is not an
    AutoSteer log, a row is corrupt, the iterations are not 0, 1, 2, ...,
    or rows come from different runs (their ``run_id`` differ).

    A last line without its line end is what a run killed mid-write leaves;
    it is an error unless ``allow_incomplete=True``, which skips it and
    records its offset in ``incomplete_tail``.
    """
    path = os.fspath(path)
    with open(path, "r", encoding="utf-8", newline="") as f:
        data = f.read()
    hist = LogHistory()
    hist.path = path
    hist.run_id = None
    hist.config = None
    hist.incomplete_tail = None
    if not data:
        raise LogFormatError(f"{path} line 1: the file is empty, not an AutoSteer results log")
    lines = data.split("\n")
    # data ends with "\n" -> last element is ""; otherwise the last line is incomplete
    tail = lines.pop()
    first = lines[0] if lines else tail
    if first.rstrip("\r") != HEADER:
        expected = HEADER.replace("\t", "\\t")
        raise LogFormatError(
            f"{path} line 1: not an AutoSteer results log (expected the header {expected!r}, "
            f"got {first[:80]!r})"
        )
    if not lines:  # header without line end
        if allow_incomplete:
            hist.incomplete_tail = 0
            return hist
        raise LogFormatError(f"{path} line 1: incomplete header (no line end)")
    offset = len(lines[0].encode("utf-8")) + 1
    for lineno, line in enumerate(lines[1:], start=2):
        hist.append(_parse_row(line, lineno, path, hist))
        offset += len(line.encode("utf-8")) + 1
    if tail:
        lineno = len(lines) + 1
        if not allow_incomplete:
            raise LogFormatError(
                f"{path} line {lineno}: incomplete row (no line end); the run was probably killed "
                "while writing it. Resume with resume=True (it drops the line) or delete the line."
            )
        hist.incomplete_tail = offset
    return hist


def _parse_row(line: str, lineno: int, path: str, hist: LogHistory) -> dict[str, Any]:
    where = f"{path} line {lineno}"
    line = line.rstrip("\r")
    fields = line.split("\t")
    if len(fields) != len(COLUMNS):
        raise LogFormatError(f"{where}: expected {len(COLUMNS)} tab-separated fields, got {len(fields)}")
    raw = dict(zip(COLUMNS, fields))
    try:
        iteration = int(raw["iteration"])
    except ValueError:
        raise LogFormatError(f"{where}: iteration {raw['iteration']!r} is not an integer") from None
    status = raw["status"]
    if status not in STATUSES:
        raise LogFormatError(f"{where}: unknown status {status!r} (expected one of {', '.join(STATUSES)})")
    if (not hist) != (status == "baseline"):
        raise LogFormatError(
            f"{where}: the baseline must be the first row and only the first row (got status {status!r} "
            f"at iteration {iteration})"
        )
    if iteration != len(hist):
        raise LogFormatError(f"{where}: expected iteration {len(hist)}, got {iteration}")
    try:
        cand = SteerCandidate.from_json(raw["candidate"])
    except AutoSteerError as e:
        raise LogFormatError(f"{where}: bad candidate: {e}") from None
    if cand.key() != raw["candidate"]:
        raise LogFormatError(f"{where}: the candidate is not in canonical form (was the log edited?)")
    try:
        n_vectors = int(raw["n_vectors"])
    except ValueError:
        raise LogFormatError(f"{where}: n_vectors {raw['n_vectors']!r} is not an integer") from None
    if n_vectors != len(cand):
        raise LogFormatError(f"{where}: n_vectors is {n_vectors} but the candidate has {len(cand)} vectors")
    if status == "baseline":
        try:
            config = json.loads(raw["config"])
        except json.JSONDecodeError:
            raise LogFormatError(f"{where}: the baseline row's config is not valid JSON") from None
        if not isinstance(config, dict):
            raise LogFormatError(f"{where}: the baseline row's config is not a JSON object")
        if run_id_of(config) != raw["run_id"]:
            raise LogFormatError(f"{where}: run_id {raw['run_id']!r} does not match the row's config (was the log edited?)")
        hist.config = config
        hist.run_id = raw["run_id"]
    elif raw["run_id"] != hist.run_id:
        raise LogFormatError(
            f"{where}: run_id {raw['run_id']!r} differs from the baseline's {hist.run_id!r}; "
            "the log mixes rows from different runs"
        )
    elif raw["config"]:
        raise LogFormatError(f"{where}: only the baseline row carries a config")
    score = _parse_float(raw["score"], "score", where, optional=status == "crash")
    best = _parse_float(raw["best_score"], "best_score", where, optional=False)
    if status != "crash" and not math.isfinite(score):
        raise LogFormatError(f"{where}: a {status} row needs a finite score, got {raw['score']!r}")
    return {
        "iteration": iteration,
        "timestamp": raw["timestamp"],
        "elapsed_s": _parse_float(raw["elapsed_s"], "elapsed_s", where, optional=False),
        "score": score,
        "best_score": best,
        "status": status,
        "n_vectors": n_vectors,
        "candidate": cand,
        "description": _unescape(raw["description"]),
        "holdout_score": _parse_float(raw["holdout_score"], "holdout_score", where, optional=True),
        "error": _unescape(raw["error"]) or None,
    }
