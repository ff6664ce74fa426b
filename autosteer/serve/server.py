"""``autosteer serve``: load the model and the presets, run the app on uvicorn."""

from __future__ import annotations

import os
import sys

__all__ = ["serve", "served_name"]


def served_name(model: str) -> str:
    """The model id clients send for ``--model model``: the name, or a path's file/folder name."""
    base = os.path.basename(model.rstrip("/\\")) or model
    base = base.removesuffix(".gguf")
    return base.replace("+", "-")


def serve(args) -> int:
    from autosteer.cli import UsageError

    try:
        import uvicorn

        from autosteer.serve.app import create_app
    except ImportError as exc:
        raise UsageError(f"autosteer serve needs {exc.name}: python -m pip install 'autosteer[serve]'") from None
    presets = {}
    for item in args.preset:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--preset {item!r}: expected NAME=FILE")
        if name in presets:
            raise UsageError(f"--preset {name!r} is given twice")
        if not os.path.isfile(path):
            raise UsageError(f"--preset {name}={path}: no such file")
        presets[name] = path
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0..65535, got {args.port}")
    if args.max_waiting < 0:
        raise UsageError(f"--max-waiting must be >= 0, got {args.max_waiting}")
    viewer = _viewer_options(args)
    api_key = args.api_key if args.api_key is not None else (os.environ.get("AUTOSTEER_API_KEY") or None)
    from autosteer.models import load_model, resolve_device

    resolve_device(args.device)
    model, tokenizer = load_model(args.model, device=args.device)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    app = create_app(
        model,
        tokenizer,
        presets=presets,
        model_name=args.name or served_name(args.model),
        max_batch=args.max_batch,
        max_tokens=args.max_tokens,
        max_waiting=args.max_waiting,
        api_key=api_key,
        max_body=args.max_body,
    )
    if viewer is not None:
        from autosteer.serve.playground.app import add_viewer

        add_viewer(app, args.log, **viewer)
    if args.host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        print(f"warning: serving on {args.host} without --api-key: anyone who reaches it can use it", file=sys.stderr)
    print(
        f"serving {app.state.autosteer.name!r} on http://{args.host}:{args.port}/v1 "
        f"(presets: {', '.join(presets) or 'none'}); Ctrl-C stops after the requests in flight",
        file=sys.stderr,
    )
    print(
        f"playground: http://{args.host}:{args.port}/"
        + (f"  search viewer: http://{args.host}:{args.port}/viewer" if viewer is not None else ""),
        file=sys.stderr,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=60)
    return 0


def _viewer_options(args) -> dict | None:
    """``--log`` / ``--holdout``: checked before the model loads; the viewer's options."""
    from autosteer.cli import UsageError, read_prompts

    log, holdout = getattr(args, "log", None), getattr(args, "holdout", None)
    if log is None:
        if holdout is not None:
            raise UsageError("--holdout goes with --log: the prompts the search of that log held out")
        return None
    from autosteer.errors import AutoSteerError
    from autosteer.search.log import read_log
    from autosteer.serve.playground.app import holdout_for_log

    if not os.path.exists(log):
        if holdout is not None:
            raise UsageError(
                f"--log {log}: no such file yet; --holdout is checked against the log, so start the "
                "search first (or leave out --holdout)"
            )
        if not os.path.isdir(os.path.dirname(os.path.abspath(log))):
            raise UsageError(f"--log {log}: its folder does not exist")
        return {}
    if holdout is None:
        return {}  # the viewer shows what is wrong with the log, if anything
    try:
        history = read_log(log, allow_incomplete=True)
    except AutoSteerError as exc:
        raise UsageError(f"--log: {exc} (needed to check --holdout)") from None
    config = history.config or {}
    prompts, expected = read_prompts(holdout)
    try:
        holdout_for_log(config, prompts, expected, holdout)
    except AutoSteerError as exc:
        raise UsageError(str(exc)) from None
    return {"holdout": prompts, "chat": bool(config.get("chat")), "max_tokens": int(config.get("max_new_tokens") or 16)}
