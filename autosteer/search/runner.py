"""The autonomous loop: baseline, then rounds of propose -> evaluate -> keep or discard.

::

    space = SteerSearchSpace(layer_range=(0, 3), coeff_range=(0.1, 0.4),
                             texts=["logical", "precise", "analytical"],
                             negative_texts=["confused", "irrational", "imprecise"])
    runner = AutoSteerRunner(model=model, tokenizer=tokenizer, prompts=prompts,
                             metric="task_accuracy", expected_outputs=expected,
                             search_space=space, log_path="steer_log.tsv", seed=42)
    results = runner.run(max_iterations=30)
    print(results)            # the short report, with the best configuration as code

Who owns what: the log owns the trials (one :class:`~autosteer.search.trial.TrialRecord`
per evaluated candidate, written as it is decided); the strategy proposes from
the history it is given and keeps nothing; the runner decides keep or discard,
once, and everything it reports is derived from the history.

Every argument is checked in ``__init__`` (and ``max_iterations`` in
:meth:`AutoSteerRunner.run`) before the baseline is evaluated, so a typo fails
in a second, not after an hour.  The search space is checked against the
model's decoder layers, and each text must tokenize to at least one token.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from datetime import datetime, timezone
from typing import Any, cast

from autosteer._canonical import digest
from autosteer._checks import check_bool, check_int
from autosteer._checks import describe as _describe
from autosteer.errors import AutoSteerError, InvalidArgumentError, LogFormatError, SearchSpaceError
from autosteer.search._threads import auto_threads, check_threads, using_threads
from autosteer.search.candidate import SteerCandidate, ends_in_user_text
from autosteer.search.evaluator import SteerEvaluator
from autosteer.search.executor import EvalSetup, WorkersLostError, check_executor
from autosteer.search.keep import DEFAULT_KEEP_RULE, KeepRule, as_keep_rule
from autosteer.search.log import FORMAT_VERSION, LogHistory, LogWriter, looks_like_log, read_log, run_id_of
from autosteer.search.metrics import Metric, MetricResult, as_metric
from autosteer.search.progress import Progress
from autosteer.search.results import SteerResults, results_from_history
from autosteer.search.space import SteerSearchSpace
from autosteer.search.strategies import DEFAULT_STRATEGY, SearchExhaustedError, Strategy, as_strategy
from autosteer.search.trial import TrialRecord, last_keep

__all__ = ["DEFAULT_LOG", "AutoSteerRunner", "SteerResults"]

#: The runner's default log file name (the agent skill's own loop writes results.tsv).
DEFAULT_LOG = "steer_log.tsv"

#: Prompts per forward pass (times the population) unless ``run(batch_size=...)`` says otherwise.
DEFAULT_BATCH_SIZE = 8


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_log_path(log_path: Any) -> str | None:
    if log_path is None:
        return None
    try:
        path = os.fspath(log_path)
    except TypeError:
        raise InvalidArgumentError(f"log_path must be a path or None, got {_describe(log_path)}") from None
    if not isinstance(path, str):
        path = os.fsdecode(path)
    if not path:
        raise InvalidArgumentError("log_path is empty; give a file name or None for no log")
    if os.path.isdir(path):
        raise InvalidArgumentError(f"log_path {path!r} is a directory; give a file name such as {DEFAULT_LOG}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InvalidArgumentError(f"cannot write the log {path!r}: directory {parent!r} does not exist")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise InvalidArgumentError(f"cannot write the log {path!r}: permission denied")
    return path


def _check_unsteered(model: Any) -> None:
    """The baseline is the model's own score: a model another Steer steers is refused."""
    from autosteer.steering.steer import active_steering

    active = active_steering(model)
    if active:
        raise InvalidArgumentError(
            f"the model is already steered by another Steer ({'; '.join(active)}), so the baseline and every trial "
            "would be scored on top of that steering. Remove it first (steer.reset_all(), or end its `with` "
            "block), or give the runner an unsteered model"
        )


def _check_system_prompts(space, spec, evaluator, prompts, holdout_prompts, expected) -> None:
    """A space with system prompts needs a chat template that renders them, a metric scored in
    the evaluator's own passes, and requests that carry no system message of their own."""
    from autosteer.search.metrics import CustomMetric

    if not evaluator.chat:
        raise SearchSpaceError(
            "search_space.system_prompts puts a system message before each request, which needs chat=True "
            "(--chat): the requests are rendered with the tokenizer's chat template"
        )
    if isinstance(spec, CustomMetric):
        raise SearchSpaceError(
            "search_space.system_prompts cannot be combined with a custom metric: the function receives the "
            "prompts itself and would never see the candidate's system prompt"
        )
    if spec.name == "perplexity" and expected is None:
        raise SearchSpaceError(
            "search_space.system_prompts with metric='perplexity' needs expected_outputs: without them the "
            "perplexity of the prompt itself is scored, and a system prompt would change what is scored"
        )
    user = space.prompt_role == "user"
    for name, items in (("prompts", prompts), ("holdout", holdout_prompts or [])):
        for i, p in enumerate(items):
            if isinstance(p, str) or not p:
                continue
            if user and not ends_in_user_text(p):
                raise SearchSpaceError(
                    f"{name}[{i}] does not end with a user message of text, and search_space.prompt_role='user' adds "
                    "the system prompt after the request's text in the user's turn"
                )
            if not user and p[0].get("role") == "system":
                raise SearchSpaceError(
                    f"{name}[{i}] starts with a system message, and search_space.system_prompts adds its own: "
                    "give the requests without a system message"
                )
    if user:
        return  # no system message is rendered
    probe = [{"role": "system", "content": space.system_prompts[0]}, {"role": "user", "content": "Hi"}]
    try:
        evaluator._prompt_ids(probe)
    except Exception as e:  # a template that refuses the system role (it raises its own error type)
        raise SearchSpaceError(
            f"the tokenizer's chat template cannot render a system message ({type(e).__name__}: {e}), so "
            "search_space.system_prompts cannot be searched with this model"
        ) from None


def _split_holdout(holdout: Any) -> tuple[Any, Any, str, str]:
    """``holdout`` as (prompts, expected, prompts name, expected name): a list of prompts, or a
    2-tuple ``(prompts, expected_outputs)`` (a tuple whose first item is itself a list)."""
    if isinstance(holdout, tuple) and len(holdout) == 2 and isinstance(holdout[0], (list, tuple)):
        return holdout[0], holdout[1], "holdout[0]", "holdout[1]"
    return holdout, None, "holdout", "holdout expected outputs"


def _check_screen(rule: KeepRule, spec: Metric, n_prompts: int | None) -> None:
    """A keep rule's ``screen`` needs a mergeable metric and fewer prompts than the search has."""
    screen = rule.screen
    if not screen:
        return
    if not spec.mergeable:
        why = (
            "a custom function scores the prompt set as a whole"
            if spec.name == "custom"
            else "its results on parts of the prompts cannot be joined into the result on all of them"
        )
        raise InvalidArgumentError(
            f"keep_rule {rule!r} screens candidates on part of the prompts, but metric {spec.name!r} cannot be "
            f"scored that way ({why}); use screen=0, or a built-in metric that generates (task_accuracy, "
            "concept_rate, fluency, steered_concept, steered_answer) or perplexity"
        )
    if n_prompts is not None and screen >= n_prompts:
        raise InvalidArgumentError(
            f"keep_rule screen={screen} must be smaller than the number of search prompts ({n_prompts}): the "
            f"screening stage scores the first {screen} prompts and the survivors the others; give "
            f"screen <= {n_prompts - 1} or more prompts"
        )


class AutoSteerRunner:
    """Search for the steering configuration that maximises (or minimises) a metric.

    The constructor takes what identifies the run (its fingerprint is the
    log's run id); :meth:`run` takes how this session runs it (progress
    display, threads, batch size, overwriting a log).  The metric, the
    strategy and the keep rule are objects that carry their own options::

        AutoSteerRunner(model, tokenizer, prompts, metric=SteeredConcept(pattern=r"\\bwedding"),
                        strategy=LocalSearch(patience=3), keep_rule=PairedRule(alpha=0.05))

    Parameters
    ----------
    model, tokenizer:
        A transformers causal LM and its tokenizer.  The model's weights are
        never changed; steering is added through hooks and removed after
        every trial (also on errors and Ctrl-C).  A model that another
        ``Steer`` steers is refused (here and again in :meth:`run`), naming
        its active vectors: the baseline must be the unsteered model.
    prompts:
        The evaluation prompts (a non-empty list of strings, or with ``chat``
        of conversations).
    metric:
        A :class:`~autosteer.search.metrics.Metric` object with its options
        (``Perplexity()``, ``SteeredAnswer(pattern=..., fluency_margin=...)``
        for a concept search,
        ``CustomMetric(fn)``, ...), the name of one with its defaults
        (``"task_accuracy"``, ``"perplexity"``, ...; see :mod:`autosteer.search.metrics`),
        or a callable ``(model, tokenizer, prompts) -> float`` (one float per
        prompt also works): a custom metric.
    expected_outputs:
        One expected string per prompt; required by ``task_accuracy``,
        optional for ``perplexity`` (then the perplexity of each expected
        text given its prompt), refused by the metrics that do not use them.
    lower_is_better:
        None picks the metric's direction (False for a custom metric).
    search_space:
        A :class:`SteerSearchSpace`; None uses ``SteerSearchSpace()``: the
        texts "logical", "precise", "analytical" over the model's middle layers.
    log_path:
        The TSV log (see :mod:`autosteer.search.log`); None writes no log.  A new run
        refuses to start over an existing file unless it is empty (or holds
        only the header) or ``run(overwrite=True)``; a log of this very run is
        refused too (a second ``run()`` would wipe its trials):
        ``run(resume=True)`` continues it.
    seed:
        The strategy's seed: the same seed, settings and history give the same proposals.
    strategy:
        A :class:`~autosteer.search.strategies.base.Strategy` object with its
        options (``LocalSearch(patience=5, n_init=8)``, the default;
        ``RandomSearch()``; ``TPE(n_startup=8)``, with Optuna), or the name of
        one with its defaults (``"local"``, ``"random"``, ``"tpe"``).  The
        runner binds it to the resolved search space (:meth:`Strategy.bind`);
        the object given is left as it is.
    keep_rule:
        A :class:`~autosteer.search.keep.KeepRule` object with its options
        (``MeanRule(min_improvement=0.0)``, the default;
        ``PairedRule(test="wilcoxon", alpha=0.1)``) or the name of one
        (``"mean"``, ``"paired"``); see :mod:`autosteer.search.keep`.
    population:
        Candidates proposed and evaluated per round (default 1: one after
        another).  With K > 1 the K candidates share each batched pass, each
        batch row steered by its own candidate.
    max_new_tokens:
        Generation length of the metrics that generate.
    chat:
        Render prompts (strings, or conversations: lists of ``{"role",
        "content"}``) with the tokenizer's chat template and its generation prompt.
    holdout:
        An optional held-out set: a list of prompts, or a tuple ``(prompts,
        expected_outputs)`` (a 2-tuple whose first item is a list is read as
        that pair, so give chat conversations in a list); scored (same metric) for the baseline, each
        round's new best (its last keep; earlier keeps of a round are superseded at once) and each
        system prompt alone; reported, never used to decide, with one exception: with
        ``steered_answer`` the fluency budget is a hard constraint, and a keep
        whose held-out answers are over it (``details["holdout_feasible"] ==
        0``) is recorded as a discard with the reason in its error column.
    executor:
        Where candidates are scored: None (in this process, on ``model``) or
        a :class:`~autosteer.RayExecutor` (Ray workers that load the model
        themselves; then ``model`` and ``tokenizer`` may be None, and the
        driver loads nothing).  The strategy, the decisions and the log stay
        in this process; the log is the same wherever the candidates were
        scored.  See :mod:`autosteer.search.executor` for faults and Ctrl-C.

    What identifies a run (``runner.config``, whose hash is the log's run id):
    the model class and its number of layers, the metric with its options and
    its direction, the keep rule with its options, the strategy with its seed
    and options, the population, ``max_new_tokens``, ``chat``, the resolved
    search space, and hashes of the prompts with their expected outputs and
    of the held-out set.  A custom function cannot be fingerprinted, so
    resuming trusts it to be the same.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[Any],
        metric: Metric | str | Callable = "task_accuracy",
        expected_outputs: Sequence[str] | None = None,
        lower_is_better: bool | None = None,
        search_space: SteerSearchSpace | None = None,
        log_path: str | os.PathLike | None = DEFAULT_LOG,
        seed: int = 0,
        *,
        strategy: Strategy | str = DEFAULT_STRATEGY,
        keep_rule: KeepRule | str = DEFAULT_KEEP_RULE,
        population: int = 1,
        max_new_tokens: int = 16,
        chat: bool = False,
        holdout: Sequence[Any] | tuple[Sequence[Any], Sequence[str] | None] | None = None,
        executor: Any = None,
    ) -> None:
        # -- plain arguments --------------------------------------------------
        spec = as_metric(metric)
        lower_is_better = check_bool("lower_is_better", lower_is_better, allow_none=True)
        chat = check_bool("chat", chat)
        seed = check_int("seed", seed)
        population = check_int("population", population, minimum=1)
        rule = as_keep_rule(keep_rule)
        _check_screen(rule, spec, None)
        strategy_obj = as_strategy(strategy)
        holdout_prompts, holdout_expected, holdout_name, holdout_expected_name = _split_holdout(holdout)
        if search_space is None:
            search_space = SteerSearchSpace()
        elif not isinstance(search_space, SteerSearchSpace):
            raise InvalidArgumentError(
                f"search_space must be a SteerSearchSpace or None, got {type(search_space).__name__}"
            )

        executor = check_executor(executor)
        if model is None or tokenizer is None:
            if executor.needs_model:
                raise InvalidArgumentError(
                    "model and tokenizer are required (None is accepted only with a RayExecutor, whose workers "
                    f"load the model); got model={_describe(model)}, tokenizer={_describe(tokenizer)}"
                )
            if (model is None) != (tokenizer is None):
                raise InvalidArgumentError("give both model and tokenizer, or neither (the workers load them)")

        try:
            # -- metric and prompts --------------------------------------------------
            steer = None
            if model is None:
                info = executor.info()  # starts the workers: they load the model, the driver does not
                tokenizer, model_name, num_layers = info.tokenizer, info.model_class, info.num_layers
            else:
                from autosteer.steering.steer import Steer

                _check_unsteered(model)  # before Steer(), which would only warn about unowned steering
                steer = Steer(model, tokenizer)
                model_name, num_layers = type(model).__name__, steer.num_layers
            evaluator_kwargs: dict[str, Any] = dict(
                metric=spec,
                max_new_tokens=max_new_tokens,
                batch_size=DEFAULT_BATCH_SIZE,
                early_stop=True,
                threads=None,
                chat=chat,
            )
            evaluator = SteerEvaluator(model, tokenizer, **evaluator_kwargs)
            prompts, expected_outputs = evaluator.check(prompts, expected_outputs)
            _check_screen(rule, spec, len(prompts))
            if holdout_prompts is not None:
                if spec.expected == "optional" and (holdout_expected is None) != (expected_outputs is None):
                    raise InvalidArgumentError(
                        f"metric={spec.name!r} scores the search prompts "
                        f"{'with' if expected_outputs is not None else 'without'} expected outputs, so the held-out "
                        f"prompts must be scored the same way: give holdout="
                        f"{'(prompts, expected_outputs)' if expected_outputs is not None else 'prompts only'}"
                    )
                holdout_prompts, holdout_expected = evaluator.check(
                    holdout_prompts, holdout_expected, prompts_name=holdout_name, expected_name=holdout_expected_name
                )

            # -- the space ----------------------------------------------------------------
            space = search_space.resolve(num_layers, model_name)
            from autosteer.steering.concept import Concept, render, text_ids

            for name, texts in (("texts", space.texts), ("negative_texts", space.negative_texts)):
                for i, text in enumerate(texts):
                    # every text must give known tokens (a concept's chat texts need a template)
                    try:
                        if isinstance(text, Concept):
                            for side in ("positive", "negative"):
                                for j, item in enumerate(getattr(text, side)):
                                    render(item, tokenizer, f"{name}[{i}] (concept {text.name!r}) {side}[{j}]")
                        else:
                            text_ids(tokenizer, text, f"{name}[{i}]")
                    except InvalidArgumentError as exc:
                        raise SearchSpaceError(str(exc)) from None
            if space.system_prompts:
                _check_system_prompts(space, spec, evaluator, prompts, holdout_prompts, expected_outputs)

            self.model = model
            self.tokenizer = tokenizer
            self.prompts = prompts
            self.expected_outputs = expected_outputs
            self.metric_object = spec
            self.metric = spec.name
            self.lower_is_better = bool(spec.lower_is_better) if lower_is_better is None else lower_is_better
            self.search_space = space
            self.log_path = _check_log_path(log_path)
            self.seed = seed
            self.population = population
            self.keep_rule = rule
            self.holdout_prompts = holdout_prompts
            self.holdout_expected = holdout_expected
            self.evaluator = evaluator
            self.steer = steer
            self.executor = executor
            splits = {"search": (prompts, expected_outputs)}
            if holdout_prompts is not None:
                splits["holdout"] = (holdout_prompts, holdout_expected)
            self._setup = EvalSetup(evaluator_kwargs, splits)
            self.strategy = strategy_obj.bind(space, seed, self.lower_is_better)
            self.config = {
                "format": FORMAT_VERSION,
                "model": model_name,
                "num_layers": num_layers,
                "metric": spec.name,
                "metric_options": spec.fingerprint(),
                "lower_is_better": self.lower_is_better,
                "keep_rule": rule.name,
                **rule.fingerprint(),
                "strategy": self.strategy.name,
                "strategy_options": self.strategy.fingerprint(),
                "seed": seed,
                "population": population,
                "max_new_tokens": evaluator.max_new_tokens,
                "chat": evaluator.chat,
                "space": space.to_dict(),
                "prompts": digest([prompts, expected_outputs]),
                "holdout": None if holdout_prompts is None else digest([holdout_prompts, holdout_expected]),
            }
            self.run_id = run_id_of(self.config)
            self._history: list[TrialRecord] = []  # empty until run() scores the baseline
            self._stopped_early: str | None = None
            self.verbose = True
            self.threads: int | None = None
            self.batch_size = evaluator.batch_size
            self.overwrite = False
        except BaseException:
            executor.close()  # workers started for this runner stop with it
            raise

    # -- public ----------------------------------------------------------------

    @property
    def results(self) -> SteerResults | None:
        """The results so far (also after an interrupted run); None before the baseline."""
        if not self._history:
            return None
        return self._results()

    def run(
        self,
        max_iterations: int,
        resume: bool = False,
        *,
        verbose: bool = True,
        overwrite: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
    ) -> SteerResults:
        """Evaluate the baseline, then up to ``max_iterations`` candidates.

        ``resume=True`` continues the run recorded in ``log_path``: its records
        are read back (nothing is re-evaluated; each round's candidates are
        checked to be what the strategy proposes), so the best, the history
        and every later proposal are those of an uninterrupted run with the
        same seed.  A missing or empty log starts a fresh run; a log from
        another run (other seed, metric, space, prompts, model ...) raises
        :class:`LogFormatError`.  A log that already holds ``max_iterations``
        trials or more is returned as it is.  A round cut short by an
        interrupt is completed with its remaining candidates.

        How this session runs (none of it identifies the run, so each may
        change between sessions of one run):

        ``verbose``: show progress: a tqdm bar on a terminal or in a notebook,
        one plain line per trial when stdout is a pipe or a file; False prints
        nothing.  ``overwrite``: start a new run over an existing log file
        that holds something else.  ``batch_size``: prompts per forward pass
        (times the population).  ``threads``: CPU threads torch uses (None:
        one for a small model, two for a larger one when the machine has an
        idle core; see :mod:`autosteer.search._threads`), decided once when the
        run starts (``runner.threads`` says what was chosen), so the run's own
        load never talks it down to one thread halfway; restored after.

        The run stops early when the search has tried everything it can reach
        (``results["stopped_early"]`` says so).  On KeyboardInterrupt the
        steering is removed, the log (complete up to the last finished trial)
        is closed, and the interrupt propagates; ``runner.results`` still
        holds the results so far.
        """
        max_iterations = check_int("max_iterations", max_iterations, minimum=0)
        resume = check_bool("resume", resume)
        verbose = check_bool("verbose", verbose)
        overwrite = check_bool("overwrite", overwrite)
        batch_size = check_int("batch_size", batch_size, minimum=1)
        threads = check_threads(threads)
        if resume and self.log_path is None:
            raise InvalidArgumentError("resume=True needs the log_path of the run to continue")
        if self.model is not None:
            _check_unsteered(self.model)  # steering added since __init__ would be in every score
        self._check_concept_directions()
        # Ray workers decide for their own machine (the setup keeps the user's value); in this
        # process the policy is applied once, before the run's own load enters the load average
        self._setup.evaluator.update(batch_size=batch_size, threads=threads)
        if threads is None and self.model is not None:
            threads = auto_threads(self.model)
        self.verbose, self.overwrite, self.batch_size, self.threads = verbose, overwrite, batch_size, threads
        self.evaluator.batch_size, self.evaluator.threads = batch_size, threads
        prior = self._load_for_resume() if resume else None
        if not resume:
            self._check_fresh_start()
        threads_ctx = nullcontext() if self.model is None else using_threads(self.threads, self.model)
        with threads_ctx:
            try:
                if self.executor.needs_model is False and self.model is not None:
                    self._check_workers_model()
                self.executor.open(self._setup, self.evaluator, self.steer)
                return self._run(max_iterations, prior)
            finally:
                self.executor.close()  # also on Ctrl-C: the workers stop, the log is closed by _run

    def _check_concept_directions(self) -> None:
        """Refuse, before the baseline, a concept with no direction at a layer the space can
        propose (every such trial would crash): :meth:`Steer.add`'s own check, over
        ``layer_range``.  The directions come from one capture per concept, cached by the
        Steer the trials use, so nothing is computed twice.  (Ray workers hold the model
        themselves: there the check runs at each trial's ``add``.)"""
        if self.steer is None:
            return
        from autosteer.steering.concept import MIN_SEPARATION, Concept

        lo, hi = self.search_space.layer_range  # type: ignore[misc]  # resolved in __init__
        for name in ("texts", "negative_texts"):
            for i, text in enumerate(getattr(self.search_space, name)):
                if not isinstance(text, Concept):
                    continue
                gaps = self.steer.concept_separation(text)
                bad = [layer for layer in range(lo, hi + 1) if not float(gaps[layer]) >= MIN_SEPARATION]
                if bad:
                    raise SearchSpaceError(
                        f"{name}[{i}]: concept {text.name!r} has no direction at layer(s) "
                        f"{', '.join(map(str, bad))} of layer_range {lo}..{hi}: its positive and negative texts "
                        f"give (nearly) the same activations there (below {MIN_SEPARATION:g} of their size); "
                        "give texts that differ in the concept, or a layer_range without those layers"
                    )

    def _check_workers_model(self) -> None:
        info = self.executor.info()
        if (info.model_class, info.num_layers) != (self.config["model"], self.config["num_layers"]):
            self.executor.close()
            raise InvalidArgumentError(
                f"the executor's workers load a {info.model_class} with {info.num_layers} layers, but the runner was "
                f"given a {self.config['model']} with {self.config['num_layers']}: give the runner the same model "
                "(or model=None, tokenizer=None to use the workers' own)"
            )

    def _run(self, max_iterations: int, prior: LogHistory | None) -> SteerResults:
        self._history = []
        self._stopped_early = None
        offset = 0.0
        start = time.perf_counter()
        writer: LogWriter | None = None
        progress: Progress | None = None
        try:
            if prior and self.log_path is not None:  # prior was read from log_path
                self._history = list(prior)
                offset = prior[-1].elapsed_s
                if prior.incomplete_tail is not None:
                    with open(self.log_path, "r+b") as f:
                        f.truncate(prior.incomplete_tail)
                writer = LogWriter(self.log_path, append=True)
            elif self.log_path is not None:
                writer = LogWriter(self.log_path)
            elapsed = lambda: offset + (time.perf_counter() - start)  # noqa: E731
            done = len(self._history) - 1 if self._history else 0
            progress = Progress(self.verbose, max_iterations, min(done, max_iterations))
            if not prior:
                self._baseline(writer, elapsed)
            base = self._history[0]
            # a baseline's score is finite: a crashed baseline stops the run before this
            progress.baseline(cast(float, base.score), base.holdout_score, done if prior else None)

            while len(self._history) - 1 < max_iterations:
                left = max_iterations - (len(self._history) - 1)
                try:
                    candidates, rnd = self._next_round(left)
                except SearchExhaustedError as e:
                    self._stopped_early = str(e)
                    progress.message(f"[autosteer] stopping early: {e}")
                    break
                for record in self._evaluate_round(candidates, rnd, elapsed):
                    if writer is not None:
                        writer.write(record)
                    best = last_keep(self._history) or base
                    progress.trial(
                        record.iteration,
                        record.score,
                        best.score,  # type: ignore[arg-type]  # kept and baseline records have a score
                        record.status,
                        record.description,
                    )
        finally:
            if writer is not None:
                writer.close()
            if progress is not None:
                progress.close()
        return self._results()

    # -- steps ---------------------------------------------------------------

    def _baseline(self, writer: LogWriter | None, elapsed) -> None:
        result = self.executor.baseline("search")
        if not math.isfinite(result.value):
            raise AutoSteerError(
                f"the baseline (unsteered) {self.metric} score is {result.value!r}; the search needs a finite baseline"
            )
        if self.keep_rule.needs_per_prompt and result.per_prompt is None:
            raise AutoSteerError(
                f"keep_rule={self.keep_rule.name!r} compares per-prompt values, but the {self.metric} metric returned "
                "a single number; return one number per prompt from the custom function, or use keep_rule='mean'"
            )
        holdout = holdout_pp = None
        details = dict(result.details)
        if self.holdout_prompts is not None:
            held = self.executor.baseline("holdout")
            holdout, holdout_pp = held.value, held.per_prompt
            details.update({f"holdout_{k}": v for k, v in held.details.items()})
        record = TrialRecord(
            iteration=0,
            status="baseline",
            candidate=SteerCandidate(),
            score=result.value,
            holdout_score=holdout,
            per_prompt=result.per_prompt,
            holdout_per_prompt=holdout_pp,
            details=details or None,
            round=0,
            timestamp=_now(),
            elapsed_s=elapsed(),
        )
        self._history.append(record)
        if writer is not None:
            writer.write(record, self.config)

    def _next_round(self, left: int) -> tuple[list[SteerCandidate], int]:
        """The candidates to evaluate next and their round: the rest of a round an interrupt cut
        short, or a new round of ``min(population, left)``."""
        history = self._history
        last = history[-1]
        if last.round > 0:
            in_round = [r for r in history if r.round == last.round]
            before = history[: len(history) - len(in_round)]
            want = min(self.population, len(in_round) + left)
            if len(in_round) < want:
                full = self.strategy.propose_round(before, want)
                if len(full) > len(in_round):
                    return full[len(in_round) :], last.round
        n = min(self.population, left)
        return self.strategy.propose_round(history, n), last.round + 1

    def _evaluate_round(self, candidates: list[SteerCandidate], rnd: int, elapsed):
        """Score the round's candidates (one batched pass where the metric allows, or two with
        screening), then decide each in proposal order; yields each record as it is decided."""
        outcomes, pruned = self._score_round(candidates, rnd)
        results = [r for r, _ in outcomes]
        errors = [e for _, e in outcomes]
        rejected: dict[int, TrialRecord] = {}  # position in the round -> keep refused on held-out
        held: dict[int, tuple[MetricResult | None, str | None]] = {}  # position -> held-out outcome
        while True:
            decided = []
            history = list(self._history)
            for i, (cand, result, error) in enumerate(zip(candidates, results, errors)):
                if i in pruned:
                    record = pruned[i].replace(iteration=len(history))
                else:
                    record = rejected.get(i) or self._decide(cand, result, error, rnd, history)
                history.append(record)
                decided.append(record)
            decided = self._score_holdout(decided, held)
            refused = {
                i: r
                for i, r in enumerate(decided)
                if r.status == "keep" and (r.details or {}).get("holdout_feasible") == 0.0
            }
            if not refused:
                break
            for i, r in refused.items():  # over the fluency budget on held-out prompts: never the result
                rejected[i] = r.replace(
                    status="discard",
                    error=(
                        f"over the fluency budget on the held-out prompts (excess "
                        f"{(r.details or {}).get('holdout_fluency_excess', float('nan')):+.3f} nat/token)"
                    ),
                )
        for record in decided:
            record = record.replace(timestamp=_now(), elapsed_s=elapsed())
            self._history.append(record)
            yield record

    def _score_round(
        self, candidates: list[SteerCandidate], rnd: int
    ) -> tuple[list[tuple[MetricResult | None, str | None]], dict[int, TrialRecord]]:
        """Each candidate's outcome on the search prompts, and the records of those pruned by the
        keep rule's screening stage (by position in the round; see :mod:`autosteer.search.keep`).

        Screening compares with the best *before the round* (the last keep of an earlier round,
        or the baseline), so a round resumed half-logged screens as the uninterrupted run did.
        A survivor's two parts are joined into its result on every prompt.  A system prompt alone
        (no vectors) is never pruned: results report it beside the best, scored on every prompt.
        """
        rule = self.keep_rule
        screen = rule.screen
        if not screen:
            return self.executor.evaluate(candidates, "search"), {}
        n = len(self.prompts)
        first, rest = list(range(screen)), list(range(screen, n))
        stage = self.executor.evaluate(candidates, "search", first)
        before = [r for r in self._history if r.round < rnd]
        best = last_keep(before) or before[0]
        reference = cast(tuple, best.per_prompt)[:screen]  # a kept or baseline record has all its values
        outcomes = list(stage)
        pruned: dict[int, TrialRecord] = {}
        survivors: list[int] = []
        for i, (result, error) in enumerate(stage):
            if error is not None or result is None or not math.isfinite(result.value) or result.per_prompt is None:
                continue  # a crash, or a non-finite score: decided as such
            if candidates[i].prompt_only:
                survivors.append(i)  # prompting alone is reported beside the best: always on every prompt
                continue
            prune, p = rule.prunes(result.per_prompt, reference, self.lower_is_better)
            if not prune:
                survivors.append(i)
                continue
            details = dict(result.details)
            details.update(fidelity=screen / n, screen_p=p)
            pruned[i] = TrialRecord(
                iteration=0,  # set when it is decided, in proposal order
                status="discard",
                candidate=candidates[i],
                score=result.value,
                per_prompt=result.per_prompt,
                details=details,
                error=(
                    f"pruned after {screen} of {n} prompts: worse there than the best (iteration {best.iteration}), "
                    f"one-sided {rule.screen_test} p = {p:.3g} < screen_alpha {rule.screen_alpha:g}"
                ),
                round=rnd,
            )
        if survivors:
            more = self.executor.evaluate([candidates[i] for i in survivors], "search", rest)
            for i, (result, error) in zip(survivors, more):
                part = cast(MetricResult, stage[i][0])
                outcomes[i] = (None, error) if result is None else (self.metric_object.merge([part, result]), None)
        return outcomes, pruned

    def _decide(
        self,
        cand: SteerCandidate,
        result: MetricResult | None,
        error: str | None,
        rnd: int,
        history: Sequence[TrialRecord],
    ) -> TrialRecord:
        """Keep, discard or crash: the one place where the runner decides (the candidates of a
        round in proposal order, each against the best of the records before it)."""
        score = None if result is None else result.value
        per_prompt = None if result is None else result.per_prompt
        details = {} if result is None else dict(result.details)
        status = "crash"
        if error is None and score is not None and not math.isfinite(score):
            error = f"non-finite score: {score!r}"
            per_prompt = None
        elif error is None:
            best = last_keep(history) or history[0]
            try:
                # a result (its score) comes when error is None; kept and baseline records have a score
                better, extra = self.keep_rule.judge(
                    cast(float, score), per_prompt, cast(float, best.score), best.per_prompt, self.lower_is_better
                )
            except InvalidArgumentError as e:
                return TrialRecord(
                    iteration=len(history),
                    status="crash",
                    candidate=cand,
                    score=None,
                    details=details or None,
                    error=str(e),
                    round=rnd,
                )
            details.update(extra)
            status = "keep" if better else "discard"
        return TrialRecord(
            iteration=len(history),
            status=status,
            candidate=cand,
            score=score,
            per_prompt=per_prompt,
            details=details or None,
            error=error,
            round=rnd,
        )

    def _score_holdout(
        self, records: list[TrialRecord], done: dict[int, tuple[MetricResult | None, str | None]]
    ) -> list[TrialRecord]:
        """The held-out score of the round's new best (its last keep: the keeps before it in the
        same round are superseded at once) and of each system prompt alone (the reference that
        prompt + steering is reported beside), in one batched pass; reported, never used to
        decide (a failure is reported in the record's error).  ``done`` holds the outcomes
        already measured in this round, by position, so a re-decided round scores nothing twice."""
        keeps = [i for i, r in enumerate(records) if r.status == "keep"]
        alone = [i for i, r in enumerate(records) if r.status in ("keep", "discard") and r.candidate.prompt_only]
        want = sorted(set(keeps[-1:] + alone))
        if self.holdout_prompts is None or not want:
            return records
        todo = [i for i in want if i not in done]
        if todo:
            try:
                got = self.executor.evaluate([records[i].candidate for i in todo], "holdout")
            except WorkersLostError:
                raise
            except Exception as e:
                got = [(None, f"{type(e).__name__}: {e}")] * len(todo)
            done.update(zip(todo, got))
        out = list(records)
        for i in want:
            result, error = done[i]
            if result is None:
                out[i] = records[i].replace(error=f"holdout failed: {error}")
                continue
            details = dict(records[i].details or {})
            details.update({f"holdout_{k}": v for k, v in result.details.items()})
            out[i] = records[i].replace(
                holdout_score=result.value, holdout_per_prompt=result.per_prompt, details=details or None
            )
        return out

    # -- resume ----------------------------------------------------------------

    def _check_fresh_start(self) -> None:
        """A new run may write over nothing, an empty file, or a log with a header and no row;
        anything else (a log of this very run included) needs resume or overwrite."""
        path = self.log_path
        if path is None or self.overwrite or not os.path.exists(path) or os.path.getsize(path) == 0:
            return
        if looks_like_log(path):
            try:
                prior = read_log(path, allow_incomplete=True)
            except LogFormatError:
                prior = None
            if prior is not None and prior.config is None:
                return  # a header and no row: nothing to lose
            if prior is not None and prior.run_id == self.run_id:
                raise InvalidArgumentError(
                    f"log_path {path!r} already holds {len(prior)} row(s) of this very run (the baseline and "
                    f"{len(prior) - 1} trial(s)); starting it again would wipe them. Continue it with "
                    "run(resume=True) / --resume, or start over with run(overwrite=True) / --overwrite"
                )
            what = "a results log of another run" if prior is not None else "a corrupt results log"
        else:
            what = "a file that is not an AutoSteer results log"
        raise InvalidArgumentError(
            f"log_path {path!r} already exists and is {what}; starting a new run would overwrite it. "
            "Resume it (resume=True / --resume), choose another log file, or overwrite it "
            "(run(overwrite=True) / --overwrite)"
        )

    def _load_for_resume(self) -> LogHistory | None:
        path = self.log_path
        if path is None:  # run() refuses resume=True without a log_path
            return None
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            return None
        prior = read_log(path, allow_incomplete=True)
        if not prior:
            return None
        if prior.run_id != self.run_id:
            old = prior.config or {}
            diffs = sorted(k for k in set(old) | set(self.config) if old.get(k) != self.config.get(k))
            detail = (
                ", ".join(
                    f"{k}: {old.get(k)!r} vs {self.config.get(k)!r}"
                    if k not in ("space", "prompts", "holdout")
                    else f"{k} differs"
                    for k in diffs
                )
                or "format differs"
            )
            raise LogFormatError(
                f"{self.log_path} line 2: the log was written by another run ({detail}); "
                "resume with the same settings, or start over with another log file "
                "or run(overwrite=True) / --overwrite"
            )
        self._verify_proposals(prior)
        return prior

    def _verify_proposals(self, prior: LogHistory) -> None:
        """Each logged round must hold what the strategy proposes after the rows before it
        (an edited log, or one from another version, is refused)."""
        lineno = 3
        i = 1
        while i < len(prior):
            rnd = prior[i].round
            j = i
            while j < len(prior) and prior[j].round == rnd:
                j += 1
            logged = [r.candidate for r in prior[i:j]]
            try:
                proposed = self.strategy.propose_round(prior[:i], len(logged))
            except SearchExhaustedError:
                proposed = []
            for k, cand in enumerate(logged):
                if k >= len(proposed) or proposed[k].key() != cand.key():
                    what = "nothing (the space is exhausted)" if k >= len(proposed) else proposed[k].describe()
                    raise LogFormatError(
                        f"{self.log_path} line {lineno + k}: seed {self.seed} proposes {what} at iteration "
                        f"{i + k}, but the log has {cand.describe()}; the log was edited "
                        "or written by another version of AutoSteer"
                    )
            lineno += j - i
            i = j

    # -- results -----------------------------------------------------------------

    def _results(self) -> SteerResults:
        return results_from_history(
            self._history or [], self.config, log_path=self.log_path, stopped_early=self._stopped_early
        )
