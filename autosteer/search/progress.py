"""Progress output of a search: a tqdm bar on a terminal or in a notebook, one plain
line per trial on a pipe or a file, nothing when silent."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = ["Progress", "reporting_interrupt"]


@contextlib.contextmanager
def reporting_interrupt(runner: Any, log: Any) -> Iterator[None]:
    """Around ``runner.run()`` in ``autosteer search`` and the demo: on Ctrl-C say how many
    trials ``log`` kept, then raise :class:`~autosteer.errors.InterruptReported` (the command
    line then prints the command that resumes, not a bare "interrupted")."""
    try:
        yield
    except KeyboardInterrupt as exc:
        from autosteer.errors import InterruptReported

        done = runner.results
        n = 0 if done is None else done["iterations"]
        print(f"interrupted after {n} trial(s); {log} holds every finished trial.", file=sys.stderr)
        raise InterruptReported(*exc.args) from exc


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (an imported ipykernel alone is not enough:
    jupyter_client imports it to look up kernel specs)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


class Progress:
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
                    self.bar = tqdm(
                        total=total,
                        initial=initial,
                        desc="autosteer",
                        unit="trial",
                        file=stream,
                        dynamic_ncols=True,
                        leave=True,
                    )
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
