"""Send one request to a running ``autosteer serve`` under two presets (and unsteered), and
print the answers side by side.

    autosteer serve --model smollm2 --preset weddings=best.json --preset formal=formal.safetensors &
    python scripts/compare_presets.py --base-url http://127.0.0.1:8000/v1 weddings formal \\
        --prompt "Give me a tip for sleeping better."

Uses the official ``openai`` client; the preset goes in the model name (``MODEL+PRESET``), so
any OpenAI client can do the same.  With ``--completions`` the prompt is sent raw to
``/v1/completions`` (a model without a chat template, such as the organism).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def compare(client, model: str, presets: list[str], prompt: str, max_tokens: int = 48,
            completions: bool = False) -> dict[str, str]:
    """``{"unsteered": text, preset: text, ...}`` for one greedy request."""
    out = {}
    for preset in [None, *presets]:
        name = model if preset is None else f"{model}+{preset}"
        if completions:
            r = client.completions.create(model=name, prompt=prompt, max_tokens=max_tokens, temperature=0)
            text = r.choices[0].text
        else:
            r = client.chat.completions.create(model=name, messages=[{"role": "user", "content": prompt}],
                                               max_tokens=max_tokens, temperature=0)
            text = r.choices[0].message.content
        out[preset or "unsteered"] = text
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("presets", nargs=2, metavar="PRESET", help="two preset names the server was started with")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--api-key", default=os.environ.get("AUTOSTEER_API_KEY", "none"))
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--completions", action="store_true", help="raw prompt to /v1/completions")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import openai

    with openai.OpenAI(base_url=args.base_url, api_key=args.api_key) as client:
        model = client.models.list().data[0].id  # the first id is the model itself
        answers = compare(client, model, args.presets, args.prompt, args.max_tokens, args.completions)
    if args.json:
        print(json.dumps({"model": model, "prompt": args.prompt, "answers": answers}, ensure_ascii=False))
    else:
        for name, text in answers.items():
            print(f"--- {name}\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
