"""Where a search's candidates are evaluated: in this process, or on Ray workers.

The runner owns the strategy, the keep/discard decision and the log; an
executor only scores.  Each round the runner hands the executor the round's
candidates in proposal order and gets one outcome per candidate back, in the
same order, so the decisions and the log do not depend on where (or in which
order) the candidates were scored.

* :class:`InProcessExecutor` (the default): the runner's own model, every
  candidate of a round in one batched pass.
* :class:`RayExecutor`: ``num_workers`` Ray actors, each loading the model once
  from a picklable spec and keeping it.  A round's candidates are split into
  contiguous slices, one per live worker, and each slice is scored as one
  population batch on its worker.

Faults (Ray): a worker that dies while it scores (killed actor, lost node) has
its slice retried once on another live worker; if that fails too, the slice's
candidates are logged as ``crash`` with both reasons, and the search goes on.
Dead workers are not replaced: when none is left, the run stops with
:class:`~autosteer.errors.AutoSteerError` (the log holds every finished round;
``resume=True`` continues it).  Ctrl-C stops the workers (and the Ray instance
the executor started), and the runner closes the log: a round's records are
written only once the whole round is decided, so an interrupted round leaves
no row, and a resumed run evaluates that round again with the same candidates.

A candidate that raises (a bad concept text, non-finite logits ...) is a crash
of that candidate only: the slice it was in is scored again one candidate at a
time to find which one failed, exactly as in process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from autosteer._checks import check_int
from autosteer._checks import describe as _describe
from autosteer.errors import AutoSteerError, InvalidArgumentError

__all__ = [
    "RAY_INSTALL",
    "EvalSetup",
    "Executor",
    "InProcessExecutor",
    "ModelInfo",
    "RayExecutor",
    "WorkersLostError",
]

RAY_INSTALL = 'pip install "autosteer[ray]"  (or: pip install ray)'

#: Outcome of one candidate: (result, None) or (None, "ErrorType: message").
Outcome = tuple[Any, "str | None"]


class WorkersLostError(AutoSteerError):
    """Every worker of a :class:`RayExecutor` has died: the run cannot go on (resume it later)."""


@dataclass(frozen=True)
class ModelInfo:
    """What the driver needs to know of the model it does not load: its class, layer count, tokenizer."""

    model_class: str
    num_layers: int
    tokenizer: Any = None


@dataclass
class EvalSetup:
    """Everything a worker needs to score candidates as the runner would (picklable).

    ``evaluator``: the keyword arguments of :class:`~autosteer.SteerEvaluator`
    (metric, custom function, generation length, ...); ``splits``: name ->
    (prompts, expected outputs) for ``"search"`` and, when given, ``"holdout"``.
    """

    evaluator: dict[str, Any]
    splits: dict[str, tuple[list, list | None]] = field(default_factory=dict)


class Scorer:
    """Scores candidates on one model: the part of the runner that runs on a worker."""

    def __init__(self, evaluator, steer, splits: dict[str, tuple[list, list | None]]) -> None:
        self.evaluator = evaluator
        self.steer = steer
        self.splits = splits

    def _split(self, split: str) -> tuple[list, list | None]:
        try:
            return self.splits[split]
        except KeyError:
            raise InvalidArgumentError(f"no prompts for split {split!r}") from None

    def baseline(self, split: str):
        """The unsteered result on a split (raises on failure: a search needs its baseline)."""
        prompts, expected = self._split(split)
        return self.evaluator.evaluate_result(prompts, expected)

    def evaluate(self, candidates: Sequence[Any], split: str, indexes: Sequence[int] | None = None) -> list[Outcome]:
        """One outcome per candidate, in order; a failing batch is scored again one by one.
        ``indexes``: only those prompts of the split, as part of it (a screening stage)."""
        prompts, expected = self._split(split)
        candidates = list(candidates)
        ev = self.evaluator
        try:
            results = ev.evaluate_candidates(self.steer, candidates, prompts, expected, indexes)
            return [(r, None) for r in results]
        except Exception as e:
            if len(candidates) == 1:
                return [(None, f"{type(e).__name__}: {e}")]
        out: list[Outcome] = []
        for cand in candidates:
            try:
                out.append((ev.evaluate_candidates(self.steer, [cand], prompts, expected, indexes)[0], None))
            except Exception as e1:
                out.append((None, f"{type(e1).__name__}: {e1}"))
        return out


class Executor:
    """Base class: how the runner has candidates scored (see the module docstring).

    ``open(setup, model, tokenizer)`` is called once per :meth:`AutoSteerRunner.run`
    before any scoring, ``close()`` after it (also on errors and Ctrl-C);
    ``info()`` may be called before ``open`` to learn about a model the driver
    did not load.
    """

    #: whether the runner must hold the model itself (False: the workers load it)
    needs_model = True

    def info(self) -> ModelInfo:
        raise NotImplementedError

    def open(self, setup: EvalSetup, evaluator: Any = None, steer: Any = None) -> None:
        raise NotImplementedError

    def baseline(self, split: str):
        raise NotImplementedError

    def evaluate(self, candidates: Sequence[Any], split: str, indexes: Sequence[int] | None = None) -> list[Outcome]:
        """One outcome per candidate on the split's prompts (``indexes``: only those, as part of
        the split: the first or second stage of a screened round)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what :meth:`open` took; the default keeps nothing."""

    def describe(self) -> str:
        return type(self).__name__


class InProcessExecutor(Executor):
    """Score in this process, on the runner's model (the default executor)."""

    def __init__(self) -> None:
        self._scorer: Scorer | None = None

    def open(self, setup: EvalSetup, evaluator: Any = None, steer: Any = None) -> None:
        if evaluator is None or steer is None:
            raise InvalidArgumentError("the in-process executor scores on the runner's model; give the runner one")
        self._scorer = Scorer(evaluator, steer, setup.splits)

    def _need(self) -> Scorer:
        if self._scorer is None:
            raise AutoSteerError("the executor is not open")
        return self._scorer

    def baseline(self, split: str):
        return self._need().baseline(split)

    def evaluate(self, candidates: Sequence[Any], split: str, indexes: Sequence[int] | None = None) -> list[Outcome]:
        return self._need().evaluate(candidates, split, indexes)

    def close(self) -> None:
        self._scorer = None

    def describe(self) -> str:
        return "in process"


# -- Ray ------------------------------------------------------------------------------


def _ray():
    try:
        import ray
    except ImportError:
        raise AutoSteerError(f"RayExecutor needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


def build_model(spec: Any) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a model spec: a name or path for :func:`autosteer.load_model`,
    or a callable (an importable function, or anything cloudpickle carries) returning the pair."""
    if callable(spec):
        out = spec()
        try:
            model, tokenizer = out
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"the model factory must return (model, tokenizer), got {_describe(out)}"
            ) from None
        return model, tokenizer
    from autosteer.models import load_model

    return load_model(spec, progress=False)


class _Worker:
    """The body of a Ray actor: one model, loaded once, and a scorer per :meth:`configure`."""

    def __init__(self, spec: Any, threads: int | None) -> None:
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        self.threads = threads
        self.model, self.tokenizer = build_model(spec)
        self.scorer: Scorer | None = None

    def info(self) -> ModelInfo:
        from autosteer.steering.steer import Steer

        steer = Steer(self.model, self.tokenizer)
        return ModelInfo(type(self.model).__name__, steer.num_layers, self.tokenizer)

    def configure(self, setup: EvalSetup) -> int:
        from autosteer.search.evaluator import SteerEvaluator
        from autosteer.steering.steer import Steer

        kwargs = dict(setup.evaluator)
        if kwargs.get("threads") is None:
            kwargs["threads"] = self.threads  # as many threads as the actor's CPUs
        evaluator = SteerEvaluator(self.model, self.tokenizer, **kwargs)
        self.scorer = Scorer(evaluator, Steer(self.model, self.tokenizer), setup.splits)
        return os.getpid()

    def _configured(self) -> Scorer:
        if self.scorer is None:
            raise RuntimeError("the worker has no evaluation set up: call configure(setup) first")
        return self.scorer

    def baseline(self, split: str):
        return self._configured().baseline(split)

    def evaluate(self, candidates: list, split: str, indexes: list[int] | None = None) -> list[Outcome]:
        return self._configured().evaluate(candidates, split, indexes)

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


def _actor_options(resources: dict[str, float] | None) -> tuple[dict[str, Any], int | None]:
    """Ray actor options from ``{"CPU": 1, "GPU": 0.5, "my_resource": 1}``, and the torch threads."""
    res = dict(resources or {"CPU": 1})
    for k, v in res.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise InvalidArgumentError(
                f"resources must map resource names to non-negative numbers, got {k!r}: {_describe(v)}"
            )
    opts: dict[str, Any] = {"num_cpus": res.pop("CPU", 1), "max_restarts": 0, "max_task_retries": 0}
    if "GPU" in res:
        opts["num_gpus"] = res.pop("GPU")
    if res:
        opts["resources"] = res
    threads = max(1, int(opts["num_cpus"])) if opts["num_cpus"] else None
    return opts, threads


class RayExecutor(Executor):
    """Score each round's candidates on ``num_workers`` Ray actors (see the module docstring).

    Parameters
    ----------
    model:
        What each worker loads, once: a name or path for
        :func:`autosteer.load_model` (``"organism"``, ``"smollm2"``, a folder,
        a ``.gguf``), or a callable returning ``(model, tokenizer)`` (a
        function of an importable module, or a closure: Ray pickles it).
    num_workers:
        How many actors (default 2).
    resources:
        What each actor reserves: ``{"CPU": 1}`` by default; ``"GPU"`` and
        custom resources of the cluster go the same way (``{"CPU": 2, "GPU":
        1}``).  Torch in each worker uses as many threads as its CPUs.
    address:
        None (default): the Ray instance already initialised in this process,
        or else a new private one on this machine (``ray.init(address="local")``),
        shut down again by :meth:`close`.  ``"auto"``: the cluster that
        ``ray start`` runs on this machine.  ``"HOST:PORT"``: that cluster.
    init_kwargs:
        Extra keyword arguments for ``ray.init`` (e.g. ``num_cpus``,
        ``_temp_dir``) when this executor starts or connects to Ray.
    start_timeout_s:
        How long to wait for the workers to load the model (default 600 s).
    """

    needs_model = False

    def __init__(
        self,
        model: Any,
        num_workers: int = 2,
        resources: dict[str, float] | None = None,
        address: str | None = None,
        init_kwargs: dict[str, Any] | None = None,
        start_timeout_s: float = 600.0,
    ) -> None:
        if not (callable(model) or isinstance(model, (str, os.PathLike))):
            raise InvalidArgumentError(
                f"model must be a name or path for load_model, or a callable returning (model, tokenizer); "
                f"got {_describe(model)}"
            )
        if isinstance(model, os.PathLike):
            model = os.fspath(model)
        if isinstance(model, str) and not model.strip():
            raise InvalidArgumentError("model is an empty name")
        self.model = model
        self.num_workers = check_int("num_workers", num_workers, minimum=1)
        self._options, self._threads = _actor_options(resources)
        self.resources = dict(resources or {"CPU": 1})
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise InvalidArgumentError(f"address must be None, 'auto' or 'HOST:PORT', got {_describe(address)}")
        self.address = address
        if init_kwargs is not None and not isinstance(init_kwargs, dict):
            raise InvalidArgumentError(f"init_kwargs must be a dict, got {_describe(init_kwargs)}")
        self.init_kwargs = dict(init_kwargs or {})
        self.start_timeout_s = float(start_timeout_s)
        self._workers: list[Any] = []
        self._dead: dict[int, str] = {}
        self._started_ray = False
        self._info: ModelInfo | None = None
        self.lost_workers: list[str] = []
        _ray()  # a clear error now when Ray is missing

    def __getstate__(self):  # the executor's settings travel, never its live actors
        state = dict(self.__dict__)
        state.update(_workers=[], _dead={}, _started_ray=False, _info=None, lost_workers=[])
        return state

    def describe(self) -> str:
        where = self.address or "local"
        return f"Ray ({where}), {self.num_workers} workers of {self.resources}"

    # -- lifecycle ---------------------------------------------------------------

    def _connect(self) -> None:
        ray = _ray()
        if ray.is_initialized():
            return
        import logging

        kwargs = {"logging_level": logging.WARNING, "log_to_driver": False, "include_dashboard": False}
        kwargs.update(self.init_kwargs)
        if self.address is None:
            ray.init(address="local", **kwargs)
            self._started_ray = True
        else:
            kwargs.pop("include_dashboard", None)
            ray.init(address=self.address, **kwargs)

    def _start_workers(self) -> None:
        if self._workers:
            return
        ray = _ray()
        self._connect()
        actor = ray.remote(_Worker).options(**self._options)
        self._workers = [actor.remote(self.model, self._threads) for _ in range(self.num_workers)]
        self._dead = {}
        try:
            ray.get([w.pid.remote() for w in self._workers], timeout=self.start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise AutoSteerError(
                f"the {self.num_workers} Ray workers did not start within {self.start_timeout_s:g} s: does the "
                f"cluster have {self.num_workers} x {self.resources} free?"
            ) from None
        except ray.exceptions.RayError as e:
            self.close()
            raise AutoSteerError(f"a Ray worker failed to load the model {self.model!r}: {_cause(e)}") from None

    def info(self) -> ModelInfo:
        if self._info is None:
            self._start_workers()
            self._info = _ray().get(self._workers[0].info.remote())
        return self._info

    def open(self, setup: EvalSetup, evaluator: Any = None, steer: Any = None) -> None:
        ray = _ray()
        self._start_workers()
        refs = [w.configure.remote(setup) for w in self._workers]
        try:
            ray.get(refs)
        except ray.exceptions.RayError as e:
            self.close()
            raise AutoSteerError(f"a Ray worker could not set up the evaluation: {_cause(e)}") from None

    def close(self) -> None:
        """Stop the workers (and the Ray instance this executor started)."""
        try:
            ray = _ray()
        except AutoSteerError:
            return
        workers, self._workers = self._workers, []
        self._dead = {}
        self._info = None
        if ray.is_initialized():
            for w in workers:
                try:
                    ray.kill(w)
                except Exception:
                    pass
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False

    # -- scoring -----------------------------------------------------------------

    def _lose(self, i: int, e: BaseException) -> str:
        self._dead[i] = reason = _cause(e)
        self.lost_workers.append(reason)
        return reason

    def _alive(self) -> list[int]:
        return [i for i in range(len(self._workers)) if i not in self._dead]

    def _no_worker_left(self) -> WorkersLostError:
        reasons = "; ".join(f"worker {i}: {r}" for i, r in sorted(self._dead.items()))
        return WorkersLostError(
            f"every Ray worker has died ({reasons}); the log holds every finished round: "
            "fix the cluster and resume the run"
        )

    def baseline(self, split: str):
        ray = _ray()
        for _attempt in range(2):
            alive = self._alive()
            if not alive:
                raise self._no_worker_left()
            i = alive[0]
            try:
                return ray.get(self._workers[i].baseline.remote(split))
            except ray.exceptions.RayActorError as e:
                self._lose(i, e)
            except ray.exceptions.RayTaskError as e:
                raise _reraise(e) from None
        raise self._no_worker_left()

    def evaluate(self, candidates: Sequence[Any], split: str, indexes: Sequence[int] | None = None) -> list[Outcome]:
        ray = _ray()
        candidates = list(candidates)
        indexes = None if indexes is None else list(indexes)
        if not candidates:
            return []
        alive = self._alive()
        if not alive:
            raise self._no_worker_left()
        n = min(len(alive), len(candidates))
        bounds = [len(candidates) * k // n for k in range(n + 1)]
        slices = [(bounds[k], bounds[k + 1]) for k in range(n)]
        submitted = [
            (alive[k], s, self._workers[alive[k]].evaluate.remote(candidates[s[0] : s[1]], split, indexes))
            for k, s in enumerate(slices)
        ]
        out: list[Outcome | None] = [None] * len(candidates)
        retry: list[tuple[tuple[int, int], int, str]] = []
        for i, (lo, hi), ref in submitted:
            try:
                out[lo:hi] = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                retry.append(((lo, hi), i, self._lose(i, e)))
            except ray.exceptions.RayTaskError as e:
                out[lo:hi] = [(None, f"worker error: {_cause(e)}")] * (hi - lo)
        for (lo, hi), first, reason in retry:
            others = [j for j in self._alive() if j != first]
            if not others:
                out[lo:hi] = [(None, f"Ray worker {first} died ({reason}) and no other worker is left")] * (hi - lo)
                continue
            j = others[0]
            try:
                out[lo:hi] = ray.get(self._workers[j].evaluate.remote(candidates[lo:hi], split, indexes))
            except ray.exceptions.RayActorError as e:
                self._lose(j, e)
                out[lo:hi] = [
                    (None, f"Ray worker {first} died ({reason}); the retry on worker {j} died too ({self._dead[j]})")
                ] * (hi - lo)
            except ray.exceptions.RayTaskError as e:
                out[lo:hi] = [(None, f"worker error: {_cause(e)}")] * (hi - lo)
        return out  # type: ignore[return-value]

    # -- for tests and monitoring ------------------------------------------------------

    def worker_pids(self) -> list[int]:
        """The process id of each live worker (starts them if needed)."""
        ray = _ray()
        self._start_workers()
        return ray.get([self._workers[i].pid.remote() for i in self._alive()])

    def worker_nodes(self) -> list[str]:
        """The Ray node id of each live worker."""
        ray = _ray()
        self._start_workers()
        return ray.get([self._workers[i].node.remote() for i in self._alive()])


def _cause(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    first = next((line for line in text if line.strip()), "")
    return f"{type(e).__name__}: {first[:300]}"


def _reraise(e) -> BaseException:
    """The original exception inside a RayTaskError when there is one."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else AutoSteerError(_cause(e))


def check_executor(executor: Any) -> Executor:
    if executor is None:
        return InProcessExecutor()
    if not isinstance(executor, Executor):
        raise InvalidArgumentError(
            f"executor must be None, an InProcessExecutor or a RayExecutor, got {_describe(executor)}"
        )
    return executor
