#!/usr/bin/env python3
"""Run one experiment with its output in a log file and a wall-clock limit.

usage: python3 scripts/ar_run.py [--log run.log] [--tail N] <timeout_s> <command> [args ...]

All of the command's output (stdout and stderr) goes to the log file, none to the
terminal, so a long training run cannot flood the agent's context. One command
argument is run by the shell (pipes, ``&&`` and variables work); several are run
directly. When the limit passes, the whole process group is terminated (then killed
five seconds later) and the exit status is 124. It prints one line,

    exit=0 seconds=12.3 log=run.log

and, only when the run failed, the last lines of the log so that a typo is quick to
fix. The script exits with the command's exit status.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections import deque

TIMEOUT_STATUS = 124


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ar_run.py",
        description="Run a command with output to a log file and a time limit; print its exit status.",
        epilog="example: python3 scripts/ar_run.py 600 python train.py",
    )
    parser.add_argument("--log", default="run.log", help="file that receives all output (default: %(default)s)")
    parser.add_argument("--tail", type=int, default=20, help="log lines shown when the run fails (default: %(default)s)")
    parser.add_argument("timeout_s", type=float, help="wall-clock limit in seconds")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")
    args = parser.parse_args(argv)
    if not args.command:
        parser.error("a command to run is required after the timeout")
    if not args.timeout_s > 0:
        parser.error(f"timeout_s must be a positive number of seconds, got {args.timeout_s}")

    shell = len(args.command) == 1
    command = args.command[0] if shell else args.command
    start = time.monotonic()
    timed_out = False
    with open(args.log, "wb") as log:
        try:
            proc = subprocess.Popen(
                command, shell=shell, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=(os.name == "posix"),
            )
        except OSError as exc:
            log.write(f"could not start {command!r}: {exc}\n".encode())
            print(f"exit=127 seconds=0.0 log={args.log} (could not start: {exc})")
            return 127
        try:
            status = proc.wait(timeout=args.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop(proc)
            status = TIMEOUT_STATUS
        except KeyboardInterrupt:
            _stop(proc)
            raise
    seconds = time.monotonic() - start
    note = f" (timed out after {args.timeout_s:g}s)" if timed_out else ""
    if status < 0:
        note = f" (killed by signal {-status})"
    print(f"exit={status} seconds={seconds:.1f} log={args.log}{note}")
    if status != 0 and args.tail > 0:
        with open(args.log, encoding="utf-8", errors="replace") as fh:
            last = deque(fh, maxlen=args.tail)
        if last:
            print(f"--- last {len(last)} lines of {args.log} ---")
            sys.stdout.write("".join(last))
            if not last[-1].endswith("\n"):
                sys.stdout.write("\n")
    return status if status >= 0 else 128 - status


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the command and everything it started; kill it if it lingers."""
    for sig, wait in ((signal.SIGTERM, 5), (getattr(signal, "SIGKILL", signal.SIGTERM), 5)):
        try:
            if os.name == "posix":
                os.killpg(proc.pid, sig)
            else:
                proc.kill()
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


if __name__ == "__main__":
    sys.exit(main())
