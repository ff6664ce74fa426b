"""The autonomous loop: baseline, then propose -> apply -> evaluate -> keep or discard.

::

    space = SteerSearchSpace(layer_range=(15, 25), coeff_range=(0.05, 1.0),
                             texts=["logical", "precise", "analytical"],
                             negative_texts=["confused", "irrational", "imprecise"])
    runner = AutoSteerRunner(model=model, tokenizer=tokenizer, prompts=prompts,
                             metric="task_accuracy", expected_outputs=expected,
                             lower_is_better=False, search_space=space,
                             log_path="results.tsv", seed=42)
    results = runner.run(max_iterations=30)
    print(results)            # the short report, with the best configuration as code

Every argument is checked in ``__init__`` (and ``max_iterations`` in
:meth:`AutoSteerRunner.run`) before the baseline is evaluated, so a typo fails
in a second, not after an hour.  The search space is checked against the
model's decoder layers, and each text must tokenize to at least one token.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import warnings
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from autosteer.errors import AutoSteerError, InvalidArgumentError, LogFormatError, SearchSpaceError
from autosteer.evaluator import METRICS, SteerEvaluator
from autosteer.log import LogWriter, read_log, run_id_of
from autosteer.search import AutoSteerSearch, SearchExhaustedError, SteerCandidate, SteerSearchSpace

__all__ = ["AutoSteerRunner", "SteerResults"]

LOG_FORMAT_VERSION = 1


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


class SteerResults(dict):
    """The outcome of :meth:`AutoSteerRunner.run`: a dict with a readable ``str()``.

    Keys: ``baseline_score``, ``best_score``, ``best_candidate`` (a
    :class:`SteerCandidate`, or None when nothing beat the baseline),
    ``best_iteration`` (0 = the baseline), ``history`` (one dict per log row,
    baseline first; see :class:`autosteer.log.LogHistory`), ``keeps``,
    ``discards``, ``crashes``, ``iterations`` (trials run, baseline excluded),
    ``elapsed_s`` (over all sessions of a resumed run), ``best_steer_code``
    (Python lines that rebuild the best configuration), ``baseline_holdout``
    and ``best_holdout`` (None without holdout prompts), ``metric``,
    ``lower_is_better``, ``seed``, ``log_path``, ``stopped_early`` (None, or
    why the run ended before ``max_iterations``).  Keys also read as
    attributes: ``results.best_score``.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def summary(self) -> str:
        """The one-line report: baseline -> best, keeps/discards/crashes."""
        if self["best_candidate"] is None:
            found = "(no candidate beat the baseline)"
        else:
            found = f"(found at iteration {self['best_iteration']})"
        return (
            f"Baseline: {_fmt(self['baseline_score'])} -> Best: {_fmt(self['best_score'])} {found} | "
            f"keeps {self['keeps']}, discards {self['discards']}, crashes {self['crashes']}"
        )

    def __str__(self) -> str:
        lines = [self.summary()]
        if self.get("baseline_holdout") is not None:
            lines.append(f"Held-out: {_fmt(self['baseline_holdout'])} -> {_fmt(self['best_holdout'])}")
        if self.get("stopped_early"):
            lines.append(f"Stopped early: {self['stopped_early']}")
        if self["best_candidate"] is not None:
            lines.append("Best configuration:")
        lines.append(self["best_steer_code"])
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"<SteerResults {self['metric']}: baseline {_fmt(self['baseline_score'])} -> best "
            f"{_fmt(self['best_score'])} at iteration {self['best_iteration']}, {self['iterations']} trials>"
        )

    def _repr_pretty_(self, p, cycle) -> None:  # IPython shows the report, not a huge dict
        p.text(str(self))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_log_path(log_path: Any) -> str | None:
    if log_path is None:
        return None
    try:
        path = os.fspath(log_path)
    except TypeError:
        raise InvalidArgumentError(f"log_path must be a path or None, got {type(log_path).__name__}") from None
    if not isinstance(path, str):
        path = os.fsdecode(path)
    if not path:
        raise InvalidArgumentError("log_path is empty; give a file name or None for no log")
    if os.path.isdir(path):
        raise InvalidArgumentError(f"log_path {path!r} is a directory; give a file name such as results.tsv")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InvalidArgumentError(f"cannot write the log {path!r}: directory {parent!r} does not exist")
    existed = os.path.exists(path)
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as e:
        raise InvalidArgumentError(f"cannot write the log {path!r}: {e.strerror or e}") from None
    if not existed:
        try:
            os.remove(path)
        except OSError:
            pass
    return path


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (an imported ipykernel alone is not enough:
    jupyter_client imports it to look up kernel specs)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - any failure means "not a notebook"
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


class _Progress:
    """tqdm on a terminal (or in a notebook), plain lines on a pipe, nothing when silent."""

    def __init__(self, verbose: bool, total: int, initial: int) -> None:
        self.bar = None
        self.plain = False
        self.total = total
        if not verbose:
            return
        stream = sys.stdout
        interactive = bool(getattr(stream, "isatty", lambda: False)())
        in_notebook = not interactive and _in_notebook()
        if interactive or in_notebook:
            try:
                if in_notebook:
                    from tqdm.auto import tqdm
                else:
                    from tqdm import tqdm
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # tqdm.auto warns when ipywidgets is missing
                    self.bar = tqdm(total=total, initial=initial, desc="autosteer", unit="trial",
                                    file=stream, dynamic_ncols=True, leave=True)
                return
            except ImportError:  # pragma: no cover - tqdm is a dependency
                pass
        self.plain = True

    def baseline(self, score: float, holdout: float | None, resumed_from: int | None) -> None:
        if resumed_from is not None:
            msg = f"[autosteer] resumed after iteration {resumed_from}: baseline {score:.4f}"
        else:
            msg = f"[autosteer] baseline {score:.4f}"
        if holdout is not None:
            msg += f" (held-out {holdout:.4f})"
        if self.bar is not None:
            self.bar.set_postfix_str(f"best {score:.4g} | baseline")
            self.bar.write(msg)
        elif self.plain:
            self._print(msg)

    def trial(self, iteration: int, score: float | None, best: float, status: str, desc: str) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"best {best:.4g} | last {status}")
        elif self.plain:
            s = "-" if score is None else f"{score:.4f}"
            self._print(f"[autosteer] {iteration}/{self.total} {status:<7} score {s}  best {best:.4f}  {desc}")

    def message(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg)
        elif self.plain:
            self._print(msg)

    def _print(self, line: str) -> None:
        """One plain progress line; a closed pipe turns progress off, never the search."""
        try:
            print(line, flush=True)
        except (BrokenPipeError, OSError):
            self.plain = False

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class AutoSteerRunner:
    """Search for the steering configuration that maximises (or minimises) a metric.

    Parameters
    ----------
    model, tokenizer:
        A transformers causal LM and its tokenizer.  The model's weights are
        never changed; steering is added through hooks and removed after
        every trial (also on errors and Ctrl-C).
    prompts:
        The evaluation prompts (a non-empty list of strings).
    metric:
        ``"task_accuracy"``, ``"perplexity"`` or ``"custom"``; see
        :mod:`autosteer.evaluator`.  A callable is accepted as shorthand for
        ``metric="custom", custom_fn=callable``.
    expected_outputs:
        One expected string per prompt; required by ``task_accuracy``,
        optional for ``perplexity`` (then the perplexity of each expected
        text given its prompt), refused for ``custom``.
    lower_is_better:
        None picks the metric's direction: True for perplexity, False for
        task_accuracy and custom.
    search_space:
        A :class:`SteerSearchSpace`; None uses ``SteerSearchSpace()``: the
        texts "logical", "precise", "analytical" over the model's middle layers.
    log_path:
        The TSV log (see :mod:`autosteer.log`); None writes no log.  An existing
        file is overwritten unless ``run(resume=True)``.
    seed, patience:
        Passed to :class:`AutoSteerSearch`.
    min_improvement:
        A candidate is kept only when it beats the best score by more than this.
    max_new_tokens, batch_size:
        Generation length and batch size of the evaluation.
    custom_fn:
        ``(model, tokenizer, prompts) -> float`` for ``metric="custom"``.
    holdout_prompts, holdout_expected:
        Optional held-out set, scored (same metric) for the baseline and each
        new best; reported, never used to decide.
    verbose:
        Show progress: a tqdm bar on a terminal or in a notebook, one plain
        line per trial when stdout is a pipe or a file; False prints nothing.

    What identifies a run (``runner.config``, hashed into the log's
    ``run_id``): the model class and its number of layers, the metric,
    ``lower_is_better``, ``min_improvement``, ``seed``, ``patience``,
    ``max_new_tokens``, the resolved search space, and hashes of the prompts
    with their expected outputs and of the held-out set.  ``batch_size`` and
    ``verbose`` may change between sessions of one run; a custom function
    cannot be fingerprinted, so resuming trusts it to be the same.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[str],
        metric: str | Callable = "task_accuracy",
        expected_outputs: Sequence[str] | None = None,
        lower_is_better: bool | None = None,
        search_space: SteerSearchSpace | None = None,
        log_path: str | os.PathLike | None = "results.tsv",
        seed: int = 0,
        patience: int = 5,
        min_improvement: float = 0.0,
        max_new_tokens: int = 16,
        batch_size: int = 8,
        custom_fn: Callable[[Any, Any, list[str]], float] | None = None,
        holdout_prompts: Sequence[str] | None = None,
        holdout_expected: Sequence[str] | None = None,
        verbose: bool = True,
    ) -> None:
        # -- plain arguments --------------------------------------------------
        if callable(metric) and not isinstance(metric, str):
            if custom_fn is not None:
                raise InvalidArgumentError("give the custom metric either as metric=callable or as custom_fn, not both")
            metric, custom_fn = "custom", metric
        if not isinstance(metric, str) or metric not in METRICS:
            raise InvalidArgumentError(
                f"unknown metric {metric!r}; expected one of {', '.join(map(repr, METRICS))}"
            )
        if lower_is_better is not None and not isinstance(lower_is_better, bool):
            raise InvalidArgumentError(f"lower_is_better must be True, False or None, got {lower_is_better!r}")
        if not _is_int(seed):
            raise InvalidArgumentError(f"seed must be an integer, got {seed!r}")
        if not _is_int(patience) or patience < 1:
            raise InvalidArgumentError(f"patience must be an integer >= 1, got {patience!r}")
        if (isinstance(min_improvement, bool) or not isinstance(min_improvement, (int, float))
                or not math.isfinite(min_improvement) or min_improvement < 0):
            raise InvalidArgumentError(f"min_improvement must be a finite number >= 0, got {min_improvement!r}")
        if search_space is None:
            search_space = SteerSearchSpace()
        elif not isinstance(search_space, SteerSearchSpace):
            raise InvalidArgumentError(
                f"search_space must be a SteerSearchSpace or None, got {type(search_space).__name__}"
            )

        # -- metric and prompts --------------------------------------------------
        evaluator = SteerEvaluator(model, tokenizer, metric, custom_fn=custom_fn,
                                   max_new_tokens=max_new_tokens, batch_size=batch_size)
        prompts, expected_outputs = evaluator.check(prompts, expected_outputs)
        if holdout_prompts is None:
            if holdout_expected is not None:
                raise InvalidArgumentError("holdout_expected was given without holdout_prompts")
        else:
            holdout_prompts, holdout_expected = evaluator.check(
                holdout_prompts, holdout_expected, prompts_name="holdout_prompts", expected_name="holdout_expected"
            )

        # -- the model and the space ------------------------------------------------
        from autosteer.steer import Steer

        steer = Steer(model, tokenizer)
        model_name = type(model).__name__
        space = search_space.resolve(steer.num_layers, model_name)
        for name, texts in (("texts", space.texts), ("negative_texts", space.negative_texts)):
            for i, text in enumerate(texts):
                if not tokenizer(text, add_special_tokens=False)["input_ids"]:
                    raise SearchSpaceError(f"{name}[{i}] {text!r} gives no token with this tokenizer")

        log_path = _check_log_path(log_path)

        self.model = model
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.expected_outputs = expected_outputs
        self.metric = metric
        self.lower_is_better = evaluator.lower_is_better if lower_is_better is None else lower_is_better
        self.search_space = space
        self.log_path = log_path
        self.seed = seed
        self.patience = patience
        self.min_improvement = float(min_improvement)
        self.holdout_prompts = holdout_prompts
        self.holdout_expected = holdout_expected
        self.verbose = bool(verbose)
        self.evaluator = evaluator
        self.steer = steer
        self.config = {
            "format": LOG_FORMAT_VERSION,
            "model": model_name,
            "num_layers": steer.num_layers,
            "metric": metric,
            "lower_is_better": self.lower_is_better,
            "min_improvement": self.min_improvement,
            "seed": seed,
            "patience": patience,
            "max_new_tokens": evaluator.max_new_tokens,
            "space": space.to_dict(),
            "prompts": _digest([prompts, expected_outputs]),
            "holdout": None if holdout_prompts is None else _digest([holdout_prompts, holdout_expected]),
        }
        self.run_id = run_id_of(self.config)
        self._state: dict[str, Any] | None = None

    # -- public ----------------------------------------------------------------

    @property
    def results(self) -> SteerResults | None:
        """The results so far (also after an interrupted run); None before the baseline."""
        if self._state is None or not self._state["history"]:
            return None
        return self._results()

    def run(self, max_iterations: int, resume: bool = False) -> SteerResults:
        """Evaluate the baseline, then up to ``max_iterations`` candidates.

        ``resume=True`` continues the run recorded in ``log_path``: its rows are
        replayed into the search (nothing is re-evaluated), so the best, the
        history and every later proposal are those of an uninterrupted run
        with the same seed.  A missing or empty log starts a fresh run; a log
        from another run (other seed, metric, space, prompts, model ...)
        raises :class:`LogFormatError`.  A log that already holds
        ``max_iterations`` trials or more is returned as it is.

        The run stops early when the search has tried everything it can reach
        (``results["stopped_early"]`` says so).  On KeyboardInterrupt the
        steering is removed, the log (complete up to the last finished trial)
        is closed, and the interrupt propagates; ``runner.results`` still
        holds the results so far.
        """
        if not _is_int(max_iterations) or max_iterations < 0:
            raise InvalidArgumentError(f"max_iterations must be an integer >= 0, got {max_iterations!r}")
        if not isinstance(resume, bool):
            raise InvalidArgumentError(f"resume must be True or False, got {resume!r}")
        if resume and self.log_path is None:
            raise InvalidArgumentError("resume=True needs the log_path of the run to continue")

        self.steer.reset_all()
        search = AutoSteerSearch(self.search_space, seed=self.seed, patience=self.patience)
        st = self._state = {
            "search": search,
            "history": [],
            "baseline_score": None,
            "baseline_holdout": None,
            "best_score": None,
            "best_candidate": None,
            "best_iteration": 0,
            "best_holdout": None,
            "keeps": 0,
            "discards": 0,
            "crashes": 0,
            "elapsed_offset": 0.0,
            "stopped_early": None,
        }
        prior = self._load_for_resume() if resume else None
        start = time.perf_counter()
        writer: LogWriter | None = None
        progress: _Progress | None = None
        try:
            if prior:
                self._replay(prior)
                st["elapsed_offset"] = prior[-1]["elapsed_s"]
                if self.log_path is not None:
                    if prior.incomplete_tail is not None:
                        with open(self.log_path, "r+b") as f:
                            f.truncate(prior.incomplete_tail)
                    writer = LogWriter(self.log_path, append=True)
            elif self.log_path is not None:
                writer = LogWriter(self.log_path)
            done = len(st["history"]) - 1 if st["history"] else 0
            progress = _Progress(self.verbose, max_iterations, min(done, max_iterations))
            if not prior:
                self._baseline(writer, start)
            progress.baseline(st["baseline_score"], st["baseline_holdout"], done if prior else None)

            for iteration in range(done + 1, max_iterations + 1):
                try:
                    candidate = search.propose()
                except SearchExhaustedError as e:
                    st["stopped_early"] = str(e)
                    progress.message(f"[autosteer] stopping early: {e}")
                    break
                row = self._trial(iteration, candidate, start)
                if writer is not None:
                    writer.write_row(row, self.run_id)
                progress.trial(iteration, row["score"], st["best_score"], row["status"], row["description"])
        finally:
            self.steer.reset_all()
            if writer is not None:
                writer.close()
            if progress is not None:
                progress.close()
        return self._results()

    # -- steps ---------------------------------------------------------------

    def _elapsed(self, start: float) -> float:
        return self._state["elapsed_offset"] + (time.perf_counter() - start)

    def _baseline(self, writer: LogWriter | None, start: float) -> None:
        st = self._state
        self.steer.reset_all()
        score = self.evaluator.evaluate(self.prompts, self.expected_outputs)
        if not math.isfinite(score):
            raise AutoSteerError(
                f"the baseline (unsteered) {self.metric} score is {score!r}; the search needs a finite baseline"
            )
        holdout = None
        if self.holdout_prompts is not None:
            holdout = self.evaluator.evaluate(self.holdout_prompts, self.holdout_expected)
        row = {
            "iteration": 0,
            "timestamp": _now(),
            "elapsed_s": self._elapsed(start),
            "score": score,
            "best_score": score,
            "status": "baseline",
            "n_vectors": 0,
            "candidate": SteerCandidate(),
            "description": "baseline (no steering)",
            "holdout_score": holdout,
            "error": None,
        }
        st.update(baseline_score=score, best_score=score, baseline_holdout=holdout, best_holdout=holdout)
        st["history"].append(row)
        if writer is not None:
            writer.write_row(row, self.run_id, self.config)

    def _improves(self, score: float) -> bool:
        best = self._state["best_score"]
        if self.lower_is_better:
            return score < best - self.min_improvement
        return score > best + self.min_improvement

    def _trial(self, iteration: int, candidate: SteerCandidate, start: float) -> dict[str, Any]:
        st = self._state
        score: float | None = None
        holdout: float | None = None
        error: str | None = None
        status = "crash"
        try:
            # eval mode also while the directions are computed (dropout off)
            with self.evaluator.eval_mode():
                candidate.apply(self.steer)
                score = self.evaluator.evaluate(self.prompts, self.expected_outputs)
                if not math.isfinite(score):
                    error = f"non-finite score: {score!r}"
                elif self._improves(score):
                    status = "keep"
                    if self.holdout_prompts is not None:
                        try:
                            holdout = self.evaluator.evaluate(self.holdout_prompts, self.holdout_expected)
                        except Exception as e:  # the holdout never decides; report its failure
                            error = f"holdout failed: {type(e).__name__}: {e}"
                else:
                    status = "discard"
        except Exception as e:
            status = "crash"
            error = f"{type(e).__name__}: {e}"
        finally:
            self.steer.reset_all()
        self._account(iteration, candidate, score, status, holdout)
        row = {
            "iteration": iteration,
            "timestamp": _now(),
            "elapsed_s": self._elapsed(start),
            "score": score,
            "best_score": st["best_score"],
            "status": status,
            "n_vectors": len(candidate),
            "candidate": candidate,
            "description": candidate.describe(),
            "holdout_score": holdout,
            "error": error,
        }
        st["history"].append(row)
        return row

    def _account(self, iteration: int, candidate: SteerCandidate, score: float | None, status: str,
                 holdout: float | None) -> None:
        st = self._state
        st["search"].record(score, status)
        if status == "keep":
            st["keeps"] += 1
            st.update(best_score=score, best_candidate=candidate, best_iteration=iteration, best_holdout=holdout)
        elif status == "discard":
            st["discards"] += 1
        else:
            st["crashes"] += 1

    # -- resume ----------------------------------------------------------------

    def _load_for_resume(self):
        if not os.path.exists(self.log_path) or os.path.getsize(self.log_path) == 0:
            return None
        prior = read_log(self.log_path, allow_incomplete=True)
        if not prior:
            return None
        if prior.run_id != self.run_id:
            old = prior.config or {}
            diffs = sorted(k for k in set(old) | set(self.config) if old.get(k) != self.config.get(k))
            detail = ", ".join(
                f"{k}: {old.get(k)!r} vs {self.config.get(k)!r}" if k not in ("space", "prompts", "holdout")
                else f"{k} differs" for k in diffs
            ) or "format differs"
            raise LogFormatError(
                f"{self.log_path} line 2: the log was written by another run ({detail}); "
                "resume with the same settings, or use another log_path / resume=False to start over"
            )
        return prior

    def _replay(self, prior) -> None:
        st = self._state
        search = st["search"]
        base = prior[0]
        st.update(baseline_score=base["score"], best_score=base["score"],
                  baseline_holdout=base["holdout_score"], best_holdout=base["holdout_score"])
        st["history"].append(base)
        for lineno, row in enumerate(prior[1:], start=3):
            try:
                proposal = search.propose()
            except SearchExhaustedError:
                proposal = None
            if proposal is None or proposal.key() != row["candidate"].key():
                what = "nothing (the space is exhausted)" if proposal is None else proposal.describe()
                raise LogFormatError(
                    f"{self.log_path} line {lineno}: seed {self.seed} proposes {what} at iteration "
                    f"{row['iteration']}, but the log has {row['candidate'].describe()}; the log was edited "
                    "or written by another version of AutoSteer"
                )
            self._account(row["iteration"], row["candidate"], row["score"], row["status"], row["holdout_score"])
            st["history"].append(row)

    # -- results -----------------------------------------------------------------

    def _results(self) -> SteerResults:
        st = self._state
        best = st["best_candidate"]
        if best is None:
            code = "# no steering configuration beat the baseline"
        else:
            code = best.to_code()
        history = st["history"]
        return SteerResults(
            baseline_score=st["baseline_score"],
            best_score=st["best_score"],
            best_candidate=best,
            best_iteration=st["best_iteration"],
            history=list(history),
            keeps=st["keeps"],
            discards=st["discards"],
            crashes=st["crashes"],
            iterations=max(0, len(history) - 1),
            elapsed_s=history[-1]["elapsed_s"] if history else 0.0,
            best_steer_code=code,
            baseline_holdout=st["baseline_holdout"],
            best_holdout=st["best_holdout"],
            metric=self.metric,
            lower_is_better=self.lower_is_better,
            seed=self.seed,
            log_path=self.log_path,
            stopped_early=st["stopped_early"],
        )
