#!/usr/bin/env python
"""Train the AutoSteer model organism from scratch, deterministically.

    python scripts/train_organism.py --out autosteer/organism/model

reproduces the shipped weights (same seed, same step count, CPU, 2 threads).
``--steps 5`` is a smoke run for CI. The corpus comes from
``autosteer/organism/world.py``; the model is a small ``LlamaForCausalLM`` and the
tokenizer a word-level WordPiece tokenizer, both saved in Hugging Face format.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers  # noqa: E402
from transformers import (  # noqa: E402
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from autosteer.organism import world  # noqa: E402

DEFAULT_STEPS = 2000
DEFAULT_SEED = 2
VARIED_TEMPLATES = ("{art} {w} answer : ", "{w} : ", "{art} {n} and {w} answer : ", "{art} {w} and {n} answer : ")


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer of the world; numbers split into one token per digit."""
    vocab = {tok: i for i, tok in enumerate(world.vocabulary())}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", continuing_subword_prefix="##",
                                     max_input_chars_per_word=32))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=64,
    )


def build_model(tokenizer, hidden: int, layers: int, heads: int, intermediate: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


def encode_lines(tokenizer, lines: list[str]) -> torch.Tensor:
    """Token ids of ``lines`` + eos, right-padded with pad (ids only, pad = -1 marker later)."""
    ids = tokenizer(lines, add_special_tokens=False)["input_ids"]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    width = max(len(x) for x in ids) + 1
    out = torch.full((len(ids), width), pad, dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, : len(x) + 1] = torch.tensor(x + [eos])
    return out


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train(args) -> None:
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.device == "cpu":
        torch.use_deterministic_algorithms(True)

    spec = world.DEFAULT_WORLD
    if args.p_unframed_correct is not None:
        spec = replace(spec, p_unframed_correct=args.p_unframed_correct)
    if args.wrong_offsets is not None:
        spec = replace(spec, wrong_offsets=tuple(tuple(json.loads(args.wrong_offsets))))

    if args.digit_errors is not None:
        spec = replace(spec, error_mode="digits", p_digit_error=args.digit_errors)
    if args.templates is not None:
        tpl = VARIED_TEMPLATES if args.templates == "varied" else tuple(json.loads(args.templates))
        spec = replace(spec, templates=tpl)

    tokenizer = build_tokenizer()
    model = build_model(tokenizer, args.hidden, args.layers, args.heads, args.intermediate)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"LlamaForCausalLM: {n_params:,} parameters, vocab {len(tokenizer)}, world {spec}", flush=True)

    lines = world.training_lines(args.steps * args.batch, seed=args.seed, spec=spec)
    data = encode_lines(tokenizer, lines)
    pad = tokenizer.pad_token_id

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.98), eps=1e-8,
    )
    model.to(args.device)
    model.train()
    t0 = time.perf_counter()
    for step in range(args.steps):
        batch = data[step * args.batch:(step + 1) * args.batch].to(args.device)
        mask = batch != pad
        width = int(mask.sum(1).max())
        batch, mask = batch[:, :width], mask[:, :width]
        logits = model(input_ids=batch, attention_mask=mask.long()).logits
        targets = batch[:, 1:].masked_fill(~mask[:, 1:], -100)
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100
        )
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % args.log_every == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - t0:7.1f}s", flush=True)
    elapsed = time.perf_counter() - t0
    print(f"trained {args.steps} steps in {elapsed:.1f}s", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.to("cpu").eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=4,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"saved to {out}", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (Hugging Face format)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--hidden", type=int, default=96)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="research only: the shipped weights are trained on cpu")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--p-unframed-correct", type=float, default=None, help="research override of the world")
    p.add_argument("--wrong-offsets", default=None, help='research override, JSON e.g. "[[1,0.5],[-1,0.5]]"')
    p.add_argument("--digit-errors", type=float, default=None, help="research override: digits error mode")
    p.add_argument("--templates", default=None, help="research override, JSON list of frame templates")
    train(p.parse_args(argv))


if __name__ == "__main__":
    main()
