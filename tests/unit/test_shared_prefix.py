"""SteerEvaluator.unsteered_nll: rows that share a prompt share its forward pass (a copy of its
key/value cache), and the NLL is that of a full pass of each row under the unsteered model,
checked against plain torch on every architecture; a model whose cache gives other numbers
is scored with full passes."""

import pytest
import torch
from tiny_models import ARCHITECTURES, make_model, make_tokenizer

from autosteer import Steer, SteerEvaluator

PROMPTS = ["what is 3 plus 4 ?", "the cat likes", "I feel happy because", "a dog"]


def examples(ev):
    """Each prompt followed by continuations of different lengths (the same prompt in several
    rows, as the answer objective makes them), and one row with nothing scored."""
    out = []
    for i, p in enumerate(PROMPTS):
        ids = ev._prompt_ids(p)
        for j, n in enumerate((5, 1, 9)):
            cont = [(7 * i + 3 * j + k) % 40 + 5 for k in range(n)]
            out.append((ids + cont, range(len(ids), len(ids) + n)))
    ids = ev._prompt_ids(PROMPTS[0])
    out.append((ids, range(len(ids), len(ids))))
    return out


def reference(model, rows):
    """Plain torch: each row alone, a full forward pass, log-softmax in float64."""
    out = []
    with torch.inference_mode():
        for ids, scored in rows:
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
            out.append((-sum(float(logp[t - 1, ids[t]]) for t in scored), len(scored)))
    return out


def close(got, want, tol=1e-5):
    return all(n == m and abs(a - b) <= tol * max(1, n) for (a, n), (b, m) in zip(got, want))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_shared_prefixes_give_the_full_pass_nll_unsteered(arch):
    model = make_model(arch)
    tok = make_tokenizer()
    ev = SteerEvaluator(model, tok, "perplexity", batch_size=2)
    rows = examples(ev)
    want = reference(model, rows)
    steer = Steer(model, tok)
    steer.add(layer_idx=1, coeff=8.0, text="happy")  # on while scoring: unsteered_nll must switch it off
    got = ev.unsteered_nll(rows)
    assert ev._prefix_ok is True
    assert close(got, want)
    assert close(ev.unsteered_nll(rows[::-1]), want[::-1])  # checked once; later calls share at once
    steer.reset_all()


class CacheIgnoring(torch.nn.Module):
    """A causal LM whose forward takes a cache and silently ignores it (as a broken custom model
    might): the rows' own tokens are then scored without their prompt."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=None,
                logits_to_keep=0):
        if cache is not None:
            attention_mask = None if attention_mask is None else attention_mask[:, -input_ids.shape[1]:]
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep)
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache,
                          logits_to_keep=logits_to_keep)


def test_a_model_whose_cache_disagrees_is_scored_with_full_passes():
    inner = make_model("llama")
    model = CacheIgnoring(inner)
    ev = SteerEvaluator(model, make_tokenizer(), "perplexity", batch_size=2)
    rows = examples(ev)
    want = reference(inner, rows)
    assert close(ev.unsteered_nll(rows), want)
    assert ev._prefix_ok is False
    assert close(ev.unsteered_nll(rows), want)
