"""The results log of a search: one TSV row per :class:`~autosteer.search.trial.TrialRecord`,
written and flushed as each trial ends, and read back strictly.

Format 2 (UTF-8, ``\\n`` line ends, tab-separated, no quoting)::

    iteration  round  timestamp  elapsed_s  status  score  holdout_score  per_prompt
    holdout_per_prompt  details  candidate  error  config

* line 1 is the header above (one line in the file, shown folded), so any TSV reader takes the file as is
  (``pandas.read_csv(path, sep="\\t")``);
* the ``baseline`` row (iteration 0, round 0) comes first and alone carries the
  run's configuration (``config``, JSON): the metric, its direction, the keep
  rule, the seed, the search space, hashes of the prompts, the model ...; the
  run id is a hash of it;
* then one row per evaluated candidate, status ``keep``, ``discard`` or
  ``crash``; candidates proposed together share a ``round``;
* ``score`` and ``holdout_score`` are written with Python's shortest
  round-trip float repr (reading gives the very same floats); empty means "not
  measured" (a crash that raised has no score; held-out prompts are scored for
  the baseline and each keep); ``per_prompt`` is the JSON list of what the
  metric measured on each search prompt, ``holdout_per_prompt`` the same on
  the held-out prompts, ``details`` a JSON object of its
  other measurements (empty when none); a candidate pruned by a keep rule's
  screening stage (:mod:`autosteer.search.keep`) is a ``discard`` whose score
  and per-prompt values cover only the screened prompts, with
  ``details["fidelity"]`` (screened prompts / all prompts, < 1) and
  ``details["screen_p"]``, and the reason in ``error``;
* ``candidate`` is the candidate's canonical JSON; ``error`` why a crash
  crashed; tabs, newlines and backslashes in text fields are escaped as
  ``\\t``, ``\\n``, ``\\r``, ``\\\\``.

Nothing derivable is stored (the running best, the number of vectors, the
description).  :func:`read_log` checks that a log is self-consistent: every
number parses strictly, iterations count up, every score is what its
per-prompt values give (their mean; for perplexity a value between the
smallest and the largest), every keep beats the running best and (under the
default keep rule) no discard does; otherwise it names the first line at
fault.  A last line cut by a killed run (even inside a multibyte
character) is recovered with ``allow_incomplete=True``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from typing import IO, Any, Literal, overload

from autosteer._canonical import canonical_json, digest
from autosteer._checks import check_bool
from autosteer.errors import AutoSteerError, LogFormatError
from autosteer.search.candidate import SteerCandidate
from autosteer.search.trial import STATUSES, TrialRecord, improves

__all__ = [
    "COLUMNS",
    "FORMAT_VERSION",
    "HEADER",
    "LogHistory",
    "LogWriter",
    "format_row",
    "looks_like_log",
    "read_log",
    "run_id_of",
]

FORMAT_VERSION = 2

COLUMNS: tuple[str, ...] = (
    "iteration",
    "round",
    "timestamp",
    "elapsed_s",
    "status",
    "score",
    "holdout_score",
    "per_prompt",
    "holdout_per_prompt",
    "details",
    "candidate",
    "error",
    "config",
)
HEADER = "\t".join(COLUMNS)
_OLD_HEADERS = {
    1: "iteration\ttimestamp\telapsed_s\tscore\tbest_score\tstatus\tn_vectors\tcandidate\tdescription\t"
    "holdout_score\terror\trun_id\tconfig",
}

_INT = re.compile(r"(0|[1-9][0-9]*)\Z")
_FLOAT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")
_NONFINITE = {"nan", "inf", "-inf"}


def run_id_of(config: Mapping[str, Any]) -> str:
    """Short hash (16 hex digits) of a run configuration's canonical JSON."""
    return digest(dict(config))


def _escape(s: str | None) -> str:
    if not s:
        return ""
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


_UNESCAPE = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def _unescape(s: str) -> str:
    return re.sub(r"\\([\\tnr])", lambda m: _UNESCAPE[m.group(1)], s)


def _fmt_float(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def format_row(record: TrialRecord, config: Mapping[str, Any] | None = None) -> str:
    """One log line (with its ``\\n``) for a record; ``config`` goes on the baseline row only."""
    per_prompt = "" if record.per_prompt is None else canonical_json([float(x) for x in record.per_prompt])
    holdout_pp = (
        "" if record.holdout_per_prompt is None else canonical_json([float(x) for x in record.holdout_per_prompt])
    )
    details = "" if not record.details else canonical_json({k: float(v) for k, v in record.details.items()})
    fields = [
        str(int(record.iteration)),
        str(int(record.round)),
        record.timestamp,
        f"{float(record.elapsed_s):.3f}",
        record.status,
        _fmt_float(record.score),
        _fmt_float(record.holdout_score),
        per_prompt,
        holdout_pp,
        details,
        record.candidate.key(),
        _escape(record.error),
        "" if config is None else canonical_json(dict(config)),
    ]
    return "\t".join(fields) + "\n"


class LogWriter:
    """Append records to a results log, flushing each one to the OS as it is written.

    ``LogWriter(path)`` truncates the file and writes the header;
    ``LogWriter(path, append=True)`` appends to an existing log.
    """

    def __init__(self, path: str | os.PathLike, *, append: bool = False) -> None:
        append = check_bool("append", append)
        self.path = os.fspath(path)
        # the writer owns the file for the whole run (closed by close() / __exit__), so no with-block
        self._f: IO[bytes] | None = open(self.path, "ab" if append else "wb")  # noqa: SIM115
        if not append:
            self._write(HEADER + "\n")

    def _write(self, text: str) -> None:
        if self._f is None:
            raise ValueError(f"the log {self.path} is closed")
        self._f.write(text.encode("utf-8"))
        self._f.flush()

    def write(self, record: TrialRecord, config: Mapping[str, Any] | None = None) -> None:
        """Write one record and flush it."""
        self._write(format_row(record, config))

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogHistory(list):
    """The records of a results log (a list of :class:`~autosteer.search.trial.TrialRecord`).

    Attributes: ``path``; ``config`` (the baseline row's configuration, None
    for a log with no rows); ``run_id`` (its hash); ``incomplete_tail`` (byte
    offset where an incomplete last line starts, when ``read_log(...,
    allow_incomplete=True)`` skipped one; else None).
    """

    path: str
    config: dict[str, Any] | None
    incomplete_tail: int | None

    @property
    def run_id(self) -> str | None:
        return None if self.config is None else run_id_of(self.config)

    @property
    def baseline_score(self) -> float | None:
        return self[0].score if self else None


def looks_like_log(path: str | os.PathLike) -> bool:
    """Whether the file starts with this format's header (a cheap test, no full read)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(len(HEADER) + 2)
    except OSError:
        return False
    return first.rstrip(b"\r\n") == HEADER.encode("utf-8")


def read_log(path: str | os.PathLike, *, allow_incomplete: bool = False) -> LogHistory:
    """Read a results log written by :class:`autosteer.AutoSteerRunner`.

    Returns a :class:`LogHistory`.  Raises :class:`LogFormatError` naming the
    file and line when the file is not an AutoSteer log of this format, a row
    is corrupt or inconsistent with the rows before it (see the module
    docstring).  A last line without its line end is what a run killed
    mid-write leaves; it is an error unless ``allow_incomplete=True``, which
    skips it and records its byte offset in ``incomplete_tail``.  A blank
    line at the very end is ignored.
    """
    allow_incomplete = check_bool("allow_incomplete", allow_incomplete)
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    hist = LogHistory()
    hist.path = path
    hist.config = None
    hist.incomplete_tail = None
    if not data:
        raise LogFormatError(f"{path} line 1: the file is empty, not an AutoSteer results log")
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the data ends with a line end; else an incomplete line
    if not lines:  # not even the header is complete
        header = _decode(tail, path, 1).rstrip("\r")
        if header != HEADER:
            raise LogFormatError(_header_error(path, header))
        if allow_incomplete:
            hist.incomplete_tail = 0
            return hist
        raise LogFormatError(f"{path} line 1: incomplete header (no line end)")
    header = _decode(lines[0], path, 1).rstrip("\r")
    if header != HEADER:
        raise LogFormatError(_header_error(path, header))
    if tail and not allow_incomplete:
        raise LogFormatError(
            f"{path} line {len(lines) + 1}: incomplete row (no line end); the run was probably killed "
            "while writing it. Resume the run (it drops the line) or delete the line."
        )
    while len(lines) > 1 and not lines[-1].strip() and not tail:
        lines.pop()  # blank lines at the very end are not corruption
    state = _ReadState()
    for lineno, raw in enumerate(lines[1:], start=2):
        hist.append(_parse_row(_decode(raw, path, lineno), f"{path} line {lineno}", hist, state))
    if tail:
        hist.incomplete_tail = len(data) - len(tail)
    return hist


def _decode(raw: bytes, path: str, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LogFormatError(f"{path} line {lineno}: not UTF-8 text ({e.reason} at column {e.start + 1})") from None


def _header_error(path: str, got: str) -> str:
    for version, old in _OLD_HEADERS.items():
        if got == old:
            return (
                f"{path} line 1: a results log of format {version}, written by an older AutoSteer; "
                f"this release reads format {FORMAT_VERSION} (start a new run, or use the older release)"
            )
    return (
        f"{path} line 1: not an AutoSteer results log: expected the header "
        f"{' | '.join(COLUMNS)} (tab-separated), got {got[:80]!r}"
    )


def _check_derived(score: float | None, values: tuple[float, ...] | None, metric: Any, column: str, where: str) -> None:
    """A score must be what its per-prompt values give (an edited score or list is refused), as
    the metric's ``score_from_values`` says; a metric this release does not know is not checked."""
    if score is None or values is None or not math.isfinite(score):
        return
    from autosteer.search.metrics import METRICS

    cls = METRICS.get(metric) if isinstance(metric, str) else None
    how = None if cls is None else cls.score_from_values
    if how == "mean":
        mean = sum(values) / len(values)
        if not math.isclose(score, mean, rel_tol=1e-9, abs_tol=1e-12):
            raise LogFormatError(
                f"{where}: {column} {score!r} is not the mean of its {len(values)} per-prompt values ({mean!r}); "
                "the log was edited or is corrupt"
            )
    elif how == "within":
        lo, hi = min(values), max(values)
        slack = 1e-9 * max(abs(lo), abs(hi), 1.0)
        if not lo - slack <= score <= hi + slack:
            raise LogFormatError(
                f"{where}: {column} {score!r} lies outside its per-prompt values ({lo!r} .. {hi!r}), which a "
                f"{metric} score cannot; the log was edited or is corrupt"
            )


class _ReadState:
    def __init__(self) -> None:
        self.metric: Any = None
        self.concepts: dict = {}
        self.best: float | None = None
        self.round = 0
        self.lower_is_better: bool = False
        self.min_improvement = 0.0
        self.check_discards = True


def _config_concepts(text: str, where: str) -> dict:
    """The concepts of a run's search space (they are in its configuration, texts included)."""
    from autosteer.steering.concept import Concept

    try:
        config = json.loads(text)
        space = config.get("space") or {}
        items = [t for k in ("texts", "negative_texts") for t in (space.get(k) or []) if isinstance(t, dict)]
        concepts = [Concept.from_dict(t) for t in items]
    except (json.JSONDecodeError, RecursionError, AttributeError, AutoSteerError):
        return {}  # the config's own errors are reported where it is parsed
    return {c.hash: c for c in concepts}


def _parse_int(text: str, name: str, where: str) -> int:
    if not _INT.match(text):
        raise LogFormatError(f"{where}: {name} {text!r} is not a whole number")
    return int(text)


@overload
def _parse_float(text: str, name: str, where: str, *, optional: Literal[False], nonfinite: bool = False) -> float: ...
@overload
def _parse_float(text: str, name: str, where: str, *, optional: bool, nonfinite: bool = False) -> float | None: ...
def _parse_float(text: str, name: str, where: str, *, optional: bool, nonfinite: bool = False) -> float | None:
    if text == "":
        if optional:
            return None
        raise LogFormatError(f"{where}: {name} is empty")
    if _FLOAT.match(text) or (nonfinite and text in _NONFINITE):
        return float(text)
    raise LogFormatError(f"{where}: {name} {text!r} is not a number")


def _parse_values(text: str, name: str, where: str) -> tuple[float, ...] | None:
    if not text:
        return None
    try:
        values = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        values = None
    if (
        not isinstance(values, list)
        or not values
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    ):
        raise LogFormatError(f"{where}: {name} must be a JSON list of finite numbers, got {text[:60]!r}")
    return tuple(float(v) for v in values)


def _parse_row(line: str, where: str, hist: LogHistory, st: _ReadState) -> TrialRecord:
    fields = line.rstrip("\r").split("\t")
    if len(fields) != len(COLUMNS):
        raise LogFormatError(f"{where}: expected {len(COLUMNS)} tab-separated fields, got {len(fields)}")
    raw = dict(zip(COLUMNS, fields))
    iteration = _parse_int(raw["iteration"], "iteration", where)
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
    rnd = _parse_int(raw["round"], "round", where)
    if status == "baseline" and rnd != 0:
        raise LogFormatError(f"{where}: the baseline is round 0, got round {rnd}")
    if status != "baseline" and not (st.round <= rnd <= st.round + 1 and rnd >= 1):
        raise LogFormatError(f"{where}: round {rnd} does not follow round {st.round}")
    st.round = rnd
    if status == "baseline":
        st.concepts = _config_concepts(raw["config"], where)
    try:
        cand = SteerCandidate.from_json(raw["candidate"], st.concepts)
    except AutoSteerError as e:
        raise LogFormatError(f"{where}: bad candidate: {e}") from None
    if cand.key() != raw["candidate"]:
        raise LogFormatError(f"{where}: the candidate is not in canonical form (was the log edited?)")
    if status == "baseline":
        if not cand.empty:
            raise LogFormatError(f"{where}: the baseline row must hold the empty candidate")
        try:
            config = json.loads(raw["config"])
        except (json.JSONDecodeError, RecursionError):
            raise LogFormatError(f"{where}: the baseline row's config is not valid JSON") from None
        if not isinstance(config, dict):
            raise LogFormatError(f"{where}: the baseline row's config is not a JSON object")
        if config.get("format") != FORMAT_VERSION:
            raise LogFormatError(f"{where}: config format {config.get('format')!r}, expected {FORMAT_VERSION}")
        hist.config = config
        st.lower_is_better = bool(config.get("lower_is_better", False))
        mi = config.get("min_improvement", 0.0)
        st.min_improvement = float(mi) if isinstance(mi, (int, float)) and not isinstance(mi, bool) else 0.0
        st.check_discards = config.get("keep_rule", "mean") == "mean"
        st.metric = config.get("metric")
    elif raw["config"]:
        raise LogFormatError(f"{where}: only the baseline row carries a config")
    elif cand.empty:
        raise LogFormatError(f"{where}: a {status} row needs a non-empty candidate (vectors or a system prompt)")
    score = _parse_float(raw["score"], "score", where, optional=status == "crash", nonfinite=status == "crash")
    if status != "crash" and not math.isfinite(score):  # type: ignore[arg-type]  # only a crash's is optional
        raise LogFormatError(f"{where}: a {status} row needs a finite score, got {raw['score']!r}")
    if status == "crash" and score is not None and math.isfinite(score):
        raise LogFormatError(
            f"{where}: a crash row has a finite score {score!r} (a crash has none, or a non-finite one)"
        )
    holdout = _parse_float(raw["holdout_score"], "holdout_score", where, optional=True)
    per_prompt = _parse_values(raw["per_prompt"], "per_prompt", where)
    holdout_pp = _parse_values(raw["holdout_per_prompt"], "holdout_per_prompt", where)
    if holdout_pp is not None and holdout is None:
        raise LogFormatError(f"{where}: holdout_per_prompt without a holdout_score")
    _check_derived(score, per_prompt, st.metric, "score", where)
    _check_derived(holdout, holdout_pp, st.metric, "holdout_score", where)
    details = None
    if raw["details"]:
        try:
            values = json.loads(raw["details"])
        except (json.JSONDecodeError, RecursionError):
            values = None
        if not isinstance(values, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()
        ):
            raise LogFormatError(f"{where}: details must be a JSON object of numbers, got {raw['details'][:60]!r}")
        details = {k: float(v) for k, v in values.items()}
    # consistency with the rows before: statuses agree with the running best
    if status == "baseline":
        st.best = score
    elif status == "keep":
        if not improves(
            score,
            st.best,  # type: ignore[arg-type]  # the baseline row came first and set best
            st.lower_is_better,
            st.min_improvement,
        ):
            raise LogFormatError(
                f"{where}: a keep with score {score!r} does not beat the best so far ({st.best!r}, "
                f"{'lower' if st.lower_is_better else 'higher'} is better, min_improvement "
                f"{st.min_improvement!r}); the log was edited or is corrupt"
            )
        st.best = score
    elif (
        status == "discard"
        and st.check_discards
        and (details or {}).get("holdout_feasible") != 0.0
        and (details or {}).get("fidelity", 1.0) >= 1.0
        and improves(
            score,
            st.best,  # type: ignore[arg-type]  # the baseline row came first and set best
            st.lower_is_better,
            st.min_improvement,
        )
    ):
        # (a discard refused for its held-out fluency may beat the best on the search prompts; a
        # candidate pruned by screening has a score on fewer prompts, details["fidelity"] < 1)
        raise LogFormatError(
            f"{where}: a discard with score {score!r} beats the best so far ({st.best!r}); "
            "it should have been kept: the log was edited or is corrupt"
        )
    return TrialRecord(
        iteration=iteration,
        status=status,
        candidate=cand,
        score=score,
        holdout_score=holdout,
        per_prompt=per_prompt,
        holdout_per_prompt=holdout_pp,
        details=details,
        error=_unescape(raw["error"]) or None,
        round=rnd,
        timestamp=raw["timestamp"],
        elapsed_s=_parse_float(raw["elapsed_s"], "elapsed_s", where, optional=False),
    )
