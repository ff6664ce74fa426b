"""CUDA path check: steering on a GPU matches the plain-torch reference, takes the
torch-op path (not the CPU kernel), and never synchronises with the host.

Run on a machine with a GPU:  python benchmarks/gpu_check.py
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import tiny_models  # noqa: E402
from reference import ReferenceSteer  # noqa: E402

from autosteer import CosineSchedule, DecaySchedule, Steer  # noqa: E402


def main():
    assert torch.cuda.is_available(), "no CUDA device"
    print("device:", torch.cuda.get_device_name(), "torch", torch.__version__)
    tok = tiny_models.make_tokenizer(padding_side="left")
    prompts = ["the cat sees a small red ball", "my friend likes"]
    failures = 0
    for arch in ["llama", "gpt2", "falcon", "gemma2", "gemma3_vlm", "llama_peft"]:
        model = tiny_models.make_model(arch).cuda()
        layers = tiny_models.layers_of(model, arch)
        vecs = [(0, 0.8, "the robot is happy", DecaySchedule(0.7, 0.2, 0)),
                (len(layers) - 1, -0.6, "a quiet friend", CosineSchedule(3, 0.1))]
        enc = tok(prompts, return_tensors="pt", padding=True).to("cuda")
        kw = dict(max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True,
                  pad_token_id=tok.pad_token_id)
        s = Steer(model, tok)
        for v in vecs:
            s.add(v[0], v[1], v[2], coeff_schedule=v[3])
        with torch.no_grad():
            got = model.generate(**enc, **kw)
            # the model's own forward may synchronise (mask checks); AutoSteer's
            # tracker and hooks, called as the model calls them, must not
            tracker = s._tracker
            hooks = [h for _, h in s._hooks.values()]
            x = torch.randn(2, enc["input_ids"].shape[1], model.config.get_text_config().hidden_size, device="cuda")
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                tracker(s._tracker_module, (), {"attention_mask": enc["attention_mask"], "input_ids": enc["input_ids"]})
                for hk in hooks:
                    hk(layers[0], (x,), {})
                sync_free = True
            except RuntimeError as exc:
                sync_free = f"SYNC: {exc}"
            finally:
                torch.cuda.set_sync_debug_mode("default")
        kernel_calls = sum(h.kernel_calls for _, h in s._hooks.values())
        calls = sum(h.calls for _, h in s._hooks.values())
        s.reset_all()
        with ReferenceSteer(model, tok, layers, vecs, directions_from="clean"), torch.no_grad():
            want = model.generate(**enc, **kw)
        a, b = torch.stack(got.logits), torch.stack(want.logits)
        err = (a - b).abs().max().item()
        ok = err < 1e-3 and torch.equal(got.sequences, want.sequences) and kernel_calls == 0 and sync_free is True
        failures += not ok
        print(f"{arch:12s} max|logit diff|={err:.2e} same tokens={torch.equal(got.sequences, want.sequences)} "
              f"hook calls={calls} C-kernel calls={kernel_calls} sync-free forward={sync_free} -> {'ok' if ok else 'FAIL'}")
    failures += check_runner()
    print("gpu check:", "all ok" if failures == 0 else f"{failures} failure(s)")
    return 1 if failures else 0


def check_runner() -> int:
    """The autonomous loop on CUDA: runs, scores like the CPU, leaves the weights alone."""
    from autosteer import AutoSteerRunner, SteerEvaluator, SteerSearchSpace

    tok = tiny_models.make_tokenizer()
    model = tiny_models.make_model("llama").cuda()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    prompts = ["what is 3 plus 4 ?", "the cat likes", "I feel happy because"]
    space = SteerSearchSpace(layer_range=(0, 2))
    for metric, kw in (("task_accuracy", dict(expected_outputs=["7", "the", "the"])), ("perplexity", {})):
        runner = AutoSteerRunner(model, tok, prompts, metric=metric, search_space=space, log_path=None, seed=1,
                                 max_new_tokens=4, **kw)
        res = runner.run(6, verbose=False)
        print(f"runner on cuda, {metric}: {res.summary()}")
    cpu = SteerEvaluator(tiny_models.make_model("llama"), tok, "perplexity").evaluate(prompts)
    gpu = SteerEvaluator(model, tok, "perplexity").evaluate(prompts)
    same = all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    ok = abs(cpu - gpu) < 1e-3 * cpu and same
    print(f"perplexity cpu {cpu:.6f} cuda {gpu:.6f}; weights unchanged {same} -> {'ok' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
