"""Concept directions against an independent reference: each text run alone through the
model (output_hidden_states, no padding), mean_diff in torch, pca with numpy's SVD."""

import json

import numpy as np
import pytest
import torch
from reference import first_layernorm_eps, normalise
from tiny_models import make_model, make_tokenizer

from autosteer import Concept, InvalidArgumentError, Steer
from autosteer.steering.concept import load_concepts

POS = ["the cat is happy and calm", "a happy dog runs", "she is calm and happy today", "we feel happy"]
NEG = ["the cat is old and grey", "a grey dog sits", "she is tired and old today", "we feel tired"]

CHAT = "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}\n{% endfor %}"


def layer_inputs(model, ids):
    """hidden_states[i] is the input of decoder layer i, for a text run alone."""
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return [h[0].float() for h in out.hidden_states[: model.config.num_hidden_layers]]


def text_acts(model, tok, texts, position="mean", chat=False):
    acts = []
    for t in texts:
        if chat:
            t = tok.apply_chat_template(t, tokenize=False)
        ids = tok(t, add_special_tokens=False)["input_ids"]
        per_layer = layer_inputs(model, ids)
        if position == "last":
            acts.append([h[-1] for h in per_layer])
        else:
            acts.append([h[1:].mean(0) if len(ids) > 1 else h[0] for h in per_layer])
    return torch.stack([torch.stack(a) for a in acts], dim=1)  # [L, N, D]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen3"])
@pytest.mark.parametrize("position", ["mean", "last"])
def test_mean_diff_matches_the_reference(arch, position):
    model, tok = make_model(arch), make_tokenizer()
    c = Concept("mood", POS, NEG + ["a grey day"], position=position)  # unpaired is fine
    got = Steer(model, tok).concept_directions(c)
    pos, neg = text_acts(model, tok, c.positive, position), text_acts(model, tok, c.negative, position)
    eps = first_layernorm_eps(model)
    want = torch.stack([normalise(p - n, eps) for p, n in zip(pos.mean(1), neg.mean(1))])
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_pca_is_the_first_singular_vector_of_the_paired_differences():
    model, tok = make_model("llama"), make_tokenizer()
    c = Concept("mood", POS, NEG, method="pca")
    got = Steer(model, tok).concept_directions(c)
    diffs = (text_acts(model, tok, POS) - text_acts(model, tok, NEG)).double().numpy()  # [L, N, D]
    eps = first_layernorm_eps(model)
    for layer in range(diffs.shape[0]):
        _, _, vt = np.linalg.svd(diffs[layer], full_matrices=False)
        v = vt[0]
        if v @ diffs[layer].mean(0) < 0:  # sign-aligned with the mean difference
            v = -v
        want = normalise(torch.from_numpy(v).float(), eps)
        torch.testing.assert_close(got[layer], want, atol=1e-4, rtol=1e-3)
        assert float(got[layer] @ torch.from_numpy(diffs[layer].mean(0)).float()) > 0


def test_chat_conversations_use_the_template():
    model, tok = make_model("llama"), make_tokenizer()
    tok.chat_template = CHAT
    pos = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": t}] for t in POS]
    neg = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": t}] for t in NEG]
    c = Concept("mood", pos, neg)
    got = Steer(model, tok).concept_directions(c)
    p, n = text_acts(model, tok, pos, chat=True), text_acts(model, tok, neg, chat=True)
    want = torch.stack([normalise(a - b, None) for a, b in zip(p.mean(1), n.mean(1))])
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_one_capture_pass_for_all_layers_and_a_cache_per_concept():
    model, tok = make_model("llama"), make_tokenizer()
    calls = []
    handle = model.model.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        s = Steer(model, tok)
        c = Concept("mood", POS, NEG)
        for layer in range(model.config.num_hidden_layers):
            s.add(layer, 0.3, concept=c)
        assert len(calls) == 1  # 8 texts in one batch, every layer recorded
        s.add(0, 0.1, concept=Concept("mood", POS, NEG))  # equal content: cached
        assert len(calls) == 1
        assert s.get_all()[0]["concept"] == {"name": "mood", "hash": c.hash} and s.get_all()[0]["text"] is None
    finally:
        s.reset_all()
        handle.remove()


def test_adding_a_concept_steers_like_its_direction_as_a_vector():
    model, tok = make_model("llama"), make_tokenizer()
    c = Concept("mood", POS, NEG)
    enc = tok(["the cat likes"], return_tensors="pt")
    with Steer(model, tok) as s:
        s.add(1, 0.5, concept=c)
        a = model(**enc).logits
    with Steer(model, tok) as s:
        s.add(1, 0.5, vector=s.concept_directions(c)[1])
        b = model(**enc).logits
    assert torch.equal(a, b)


def test_concepts_are_values_with_a_content_hash(tmp_path):
    a = Concept("mood", POS, NEG)
    assert a == Concept("mood", list(POS), list(NEG)) and a.hash == Concept("other", POS, NEG).hash
    assert a.hash != Concept("mood", POS, NEG, position="last").hash
    assert Concept.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    (tmp_path / "one.json").write_text(json.dumps(a.to_dict()))
    (tmp_path / "many.jsonl").write_text("\n".join(json.dumps(Concept(n, POS, NEG).to_dict()) for n in "ab"))
    assert load_concepts(tmp_path / "one.json") == [a]
    assert [c.name for c in load_concepts(tmp_path / "many.jsonl")] == ["a", "b"]


def test_concept_files_must_be_utf8_a_bom_is_dropped(tmp_path):
    """load_concepts(latin1.json) raised a bare UnicodeDecodeError naming no file."""
    a = Concept("café", POS, NEG)
    text = json.dumps(a.to_dict(), ensure_ascii=False)
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert load_concepts(tmp_path / "bom.json") == [a]
    (tmp_path / "latin1.json").write_bytes(text.encode("latin-1"))
    col = text.index("é") + 1
    with pytest.raises(InvalidArgumentError, match=rf"concept file '.*latin1\.json' is not UTF-8 text: line 1 column "
                                                   rf"{col} has the byte 0xe9"):
        load_concepts(tmp_path / "latin1.json")


@pytest.mark.parametrize("kwargs, match", [
    (dict(positive=[], negative=NEG), "positive is empty"),
    (dict(positive=POS, negative=[]), "negative is empty"),
    (dict(positive=POS, negative=NEG[:3], method="pca"), "paired texts, but positive has 4 and negative 3"),
    (dict(positive=POS, negative=NEG, method="svd"), "method must be one of"),
    (dict(positive=POS, negative=NEG, position="first"), "position must be one of"),
    (dict(positive=POS + ["  "], negative=NEG), r"positive\[4\] is empty"),
    (dict(positive="happy", negative=NEG), "must be a list"),
    (dict(positive=[[{"role": "narrator", "content": "x"}]], negative=NEG), "unknown role 'narrator'"),
    (dict(positive=[[{"role": "user"}]], negative=NEG), "must be a message"),
])
def test_bad_concepts_are_refused(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        Concept("mood", **kwargs)


def test_bad_concept_use_is_refused_before_any_work():
    model, tok = make_model("llama"), make_tokenizer()
    s = Steer(model, tok)
    with pytest.raises(InvalidArgumentError, match="no chat template"):
        s.add(0, 0.2, concept=Concept("mood", [[{"role": "user", "content": "hi"}]], NEG))
    with pytest.raises(InvalidArgumentError, match="must be an autosteer.Concept"):
        s.add(0, 0.2, concept={"name": "mood"})
    with pytest.raises(InvalidArgumentError, match="needs a tokenizer"):
        Steer(model, None).add(0, 0.2, concept=Concept("mood", POS, NEG))
    assert s.get_all() == []


def test_a_text_that_tokenizes_to_nothing_is_named():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "[PAD]": 1, "happy": 2, "sad": 3}, unk_token="[UNK]"))
    raw.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents()])
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]")
    assert tok("\u0301", add_special_tokens=False)["input_ids"] == []  # a lone combining accent
    s = Steer(make_model("llama"), tok)
    with pytest.raises(InvalidArgumentError, match=r"concept 'mood' negative\[1\] '.*' produces no tokens"):
        s.add(0, 0.2, concept=Concept("mood", ["happy"], ["sad", "\u0301"]))


# ------------------------------------------------ degenerate concepts and unknown words (issue 17 items 7, 17)
@pytest.fixture(scope="module")
def organism():
    from autosteer import load_organism

    return load_organism()


@pytest.mark.parametrize("method", ["mean_diff", "pca"])
def test_a_concept_with_identical_sides_is_refused_naming_it(method):
    model, tok = make_model("llama"), make_tokenizer()
    texts = POS[:2]
    c = Concept("same", texts, list(texts), method=method)
    s = Steer(model, tok)
    with pytest.raises(InvalidArgumentError, match=r"concept 'same' has no direction at layer 1: its positive and "
                                                   r"negative texts give \(nearly\) the same activations"):
        s.add(1, 0.5, concept=c)
    assert s.get_all() == []
    # a real concept on the same layer passes, and its separation is the reference's
    good = Concept("mood", POS, NEG, method=method)
    s.add(1, 0.5, concept=good)
    s.reset_all()
    p, n = text_acts(model, tok, POS), text_acts(model, tok, NEG)
    if method == "mean_diff":
        gap = (p[1].mean(0) - n[1].mean(0)).norm()
    else:
        gap = (p[1] - n[1]).norm(dim=-1).pow(2).mean().sqrt()
    scale = torch.cat([p[1], n[1]]).norm(dim=-1).mean()
    torch.testing.assert_close(s.concept_separation(good)[1], gap / scale, rtol=1e-4, atol=1e-6)


def test_unknown_words_are_refused_naming_the_word(organism):
    model, tok = organism
    assert set(tok("careful", add_special_tokens=False)["input_ids"]) == {tok.unk_token_id}  # the premise
    s = Steer(model, tok)
    for word in ("careful", "sloppy"):
        with pytest.raises(InvalidArgumentError, match=f"text '{word}': the tokenizer knows no word of it"):
            s.add(0, 0.5, text=word)
    c = Concept("care", ["precise"], ["sloppy"])
    with pytest.raises(InvalidArgumentError, match=r"concept 'care' negative\[0\] 'sloppy': the tokenizer knows no word"):
        s.add(0, 0.5, concept=c)
    assert s.get_all() == []
    # one unknown word among known ones is refused too, naming that word (it was accepted)
    assert tok("precise careful", add_special_tokens=False)["input_ids"][-1] == tok.unk_token_id  # the premise
    with pytest.raises(InvalidArgumentError, match=r"text 'precise careful': the tokenizer does not know the "
                                                   r"word 'careful' \(it maps only to the unknown token <unk>\)"):
        s.add(0, 0.5, text="precise careful")
    c = Concept("care", ["precise logical", "a precise sloppy one"], ["confused"])
    with pytest.raises(InvalidArgumentError, match=r"concept 'care' positive\[1\] 'a precise sloppy one': the "
                                                   r"tokenizer does not know the word 'sloppy'"):
        s.add(0, 0.5, concept=c)
    assert s.get_all() == []
    s.add(0, 0.5, text="precise logical")  # every word known: accepted
    s.reset_all()


def test_unknown_words_in_a_search_space_are_refused(organism, tmp_path):
    from autosteer import AutoSteerRunner, SearchSpaceError, SteerSearchSpace

    model, tok = organism
    space = SteerSearchSpace(texts=["precise", "careful"], layer_range=(0, 1))
    with pytest.raises(SearchSpaceError, match=r"texts\[1\] 'careful': the tokenizer knows no word of it"):
        AutoSteerRunner(model, tok, ["what is 3 plus 4 ?"], expected_outputs=["7"], search_space=space,
                        log_path=tmp_path / "log.tsv")
    space = SteerSearchSpace(texts=["precise", "logical careful"], layer_range=(0, 1))
    with pytest.raises(SearchSpaceError, match=r"texts\[1\] 'logical careful': the tokenizer does not know the "
                                               r"word 'careful'"):
        AutoSteerRunner(model, tok, ["what is 3 plus 4 ?"], expected_outputs=["7"], search_space=space,
                        log_path=tmp_path / "log.tsv")
