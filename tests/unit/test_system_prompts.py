"""A system prompt as a search dimension: candidates carry one, the evaluator generates with it
(checked against plain transformers generation of the rendered conversation), answers are
judged against the plain request, and the runner evaluates each prompt alone first."""

import pytest
import torch
from tiny_models import make_model, make_tokenizer

from autosteer import AutoSteerRunner, SteerCandidate, SteerEvaluator, SteerSearchSpace
from autosteer.errors import InvalidArgumentError, SearchSpaceError
from autosteer.search.log import read_log
from autosteer.search.metrics import SteeredAnswer
from autosteer.search.strategies import LocalSearch, RandomSearch
from autosteer.search.strategies._sampling import perturb, random_candidate
from autosteer.steering.steer import Steer

CHAT = "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}\n{% endfor %}<assistant>"
PROMPTS = ["what is 3 plus 4 ?", "the cat likes", "I feel happy because", "a dog"]
SYSTEMS = ("you love cats", "talk about the old man")
N_NEW = 5


@pytest.fixture(scope="module")
def model():
    return make_model("llama")


def chat_tok():
    tok = make_tokenizer(padding_side="left")
    tok.chat_template = CHAT
    return tok


def rendered_ids(tok, messages):
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"]


def greedy(model, tok, ids, n):
    """Plain transformers greedy generation of one unpadded row."""
    with torch.inference_mode():
        out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=n, do_sample=False, num_beams=1, pad_token_id=tok.pad_token_id)
    gen = out[0, len(ids):].tolist()
    if tok.eos_token_id in gen:
        gen = gen[: gen.index(tok.eos_token_id) + 1]
    return gen


def cli_search(model, tmp_path, *flags):
    """The tiny chat model saved as a folder, and `autosteer search` arguments for it (log at
    tmp_path/log.tsv, JSON output) with ``flags`` added."""
    folder = tmp_path / "tiny-chat"
    model.save_pretrained(folder)
    chat_tok().save_pretrained(folder)
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS) + "\n")
    return folder, ["search", "--model", str(folder), "--prompts", str(tmp_path / "p.txt"), "--concept-pattern",
                    "the|a", "--layers", "1:2", "--texts", "happy", "--iterations", "3", "--max-new-tokens",
                    str(N_NEW), "--log", str(tmp_path / "log.tsv"), *flags, "--json"]


def test_candidate_keys_are_unchanged_without_a_system_prompt():
    vec = {"layer_idx": 1, "coeff": 0.5, "text": "happy", "schedule": None}
    plain = SteerCandidate.from_dict([vec])
    assert plain.key() == '{"vectors":[{"coeff":0.5,"layer_idx":1,"schedule":null,"text":"happy"}]}'
    both = SteerCandidate(plain.vectors, "be brief")
    assert both != plain and both.key() != plain.key()
    assert SteerCandidate.from_json(both.key()) == both
    assert both.describe() == 'system "be brief" + L1 +0.5 "happy"'
    alone = SteerCandidate((), "be brief")
    assert len(alone) == 0 and alone.describe() == 'system "be brief"'
    assert alone.prompt_only and not alone.empty and not both.prompt_only and not both.empty
    assert SteerCandidate().empty and not SteerCandidate().prompt_only
    assert "'content': \"be brief\"" in both.to_code()
    assert both.messages("hi") == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert plain.messages("hi") == "hi"
    for bad in ("", "  ", 3):
        with pytest.raises(InvalidArgumentError, match="system must be None or a non-empty string"):
            SteerCandidate((), bad)
    with pytest.raises(InvalidArgumentError, match="already starts with a system message"):
        both.messages([{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}])


def test_space_serialises_and_contains_system_prompts():
    space = SteerSearchSpace(layer_range=(0, 1), texts=["happy"], system_prompts="be brief")
    assert space.system_prompts == ("be brief",)
    assert SteerSearchSpace.from_dict(space.to_dict()) == space
    assert "system_prompts" not in SteerSearchSpace(layer_range=(0, 1), texts=["happy"]).to_dict()
    assert space.contains(SteerCandidate((), "be brief"))
    assert not space.contains(SteerCandidate((), "other"))
    assert not space.contains(SteerCandidate())
    with pytest.raises(SearchSpaceError, match=r"system_prompts\[1\] must be a non-empty string"):
        SteerSearchSpace(texts=["happy"], system_prompts=["ok", " "])


def test_strategies_propose_prompting_alone_first_and_stay_in_the_space():
    import random

    space = SteerSearchSpace(layer_range=(0, 2), texts=["happy", "calm"], system_prompts=SYSTEMS,
                             schedules=("none",))
    for strategy in (LocalSearch(space, seed=3), RandomSearch(space, seed=3)):
        first = strategy.propose_round([], 5)
        assert [c.system for c in first[:2]] == list(SYSTEMS) and all(len(c) == 0 for c in first[:2])
        assert all(len(c) >= 1 and space.contains(c) for c in first[2:])
    rng = random.Random(0)
    drawn = [random_candidate(rng, space) for _ in range(200)]
    assert {c.system for c in drawn} == {None, *SYSTEMS}  # every option is reachable
    moved = [perturb(rng, space, SteerCandidate((), SYSTEMS[0])) for _ in range(50)]
    assert all(m is None or space.contains(m) for m in moved)
    assert any(m is not None and len(m) == 1 for m in moved)  # prompting alone gains a vector
    # without system prompts a space draws what it always drew (no extra random draw)
    plain = SteerSearchSpace(layer_range=(0, 2), texts=["happy", "calm"], schedules=("none",))
    a, b = random.Random(5), random.Random(5)
    assert [random_candidate(a, plain).key() for _ in range(20)] == [
        random_candidate(b, plain.replace()).key() for _ in range(20)]


def test_generation_uses_each_candidates_system_prompt(model):
    tok = chat_tok()
    ev = SteerEvaluator(model, tok, "task_accuracy", max_new_tokens=N_NEW, batch_size=3, chat=True)
    steer = Steer(model, tok)
    cands = [SteerCandidate((), SYSTEMS[0]), SteerCandidate((), SYSTEMS[1])]
    from autosteer.search.metrics import MetricJob

    with torch.inference_mode():
        texts, ids = ev.generate_with_ids(MetricJob(PROMPTS, None, cands, steer), early_stop=False)
    for g, system in enumerate(SYSTEMS):
        for p, prompt in enumerate(PROMPTS):
            want = greedy(model, tok, rendered_ids(tok, [{"role": "system", "content": system},
                                                         {"role": "user", "content": prompt}]), N_NEW)
            assert ids[g][p] == want, (system, prompt)
    # the tiny model's greedy answers barely depend on the context, its next-token distribution does
    with torch.inference_mode():
        logp = ev.next_token_logprobs(MetricJob(PROMPTS, None, cands, steer))
    for g, system in enumerate(SYSTEMS):
        for p, prompt in enumerate(PROMPTS):
            ids_p = rendered_ids(tok, [{"role": "system", "content": system}, {"role": "user", "content": prompt}])
            with torch.inference_mode():
                want = torch.log_softmax(model(input_ids=torch.tensor([ids_p])).logits[0, -1].float(), -1)
            torch.testing.assert_close(logp[g][p], want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logp[0], logp[1], atol=1e-3)  # the two system prompts change the model's view


def test_answers_are_judged_against_the_plain_request(model):
    tok = chat_tok()
    metric = SteeredAnswer(pattern=lambda t: 1.0, fluency_margin=100.0)
    ev = SteerEvaluator(model, tok, metric, max_new_tokens=N_NEW, chat=True)
    steer = Steer(model, tok)
    (got,) = ev.evaluate_candidates(steer, [SteerCandidate((), SYSTEMS[0])], PROMPTS)
    nll = []
    for p, prompt in enumerate(PROMPTS):
        answer = greedy(model, tok, rendered_ids(tok, [{"role": "system", "content": SYSTEMS[0]},
                                                       {"role": "user", "content": prompt}]), N_NEW)
        plain = rendered_ids(tok, [{"role": "user", "content": prompt}])  # no system message
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=torch.tensor([plain + answer])).logits[0].double(), -1)
        nll.append(-sum(float(logp[len(plain) + i - 1, t]) for i, t in enumerate(answer)) / len(answer))
    assert got.details["fluency"] == pytest.approx(sum(nll) / len(nll), abs=1e-5)


@pytest.mark.parametrize("role", ["system", "user"])
def test_the_runner_reports_prompting_alone_and_resumes_exactly(model, tmp_path, role):
    tok = chat_tok()
    space = SteerSearchSpace(layer_range=(1, 2), coeff_range=(0.2, 0.8), texts=["happy"], max_vectors=1,
                             schedules=("none",), system_prompts=SYSTEMS, prompt_role=role)
    metric = SteeredAnswer(pattern=r"the|a", fluency_margin=100.0)

    def runner(path):
        return AutoSteerRunner(model, tok, PROMPTS, metric=metric, search_space=space, log_path=path, chat=True,
                               population=3, max_new_tokens=N_NEW, holdout=["she reads", "the old man is"], seed=1)

    full = runner(tmp_path / "full.tsv").run(6, verbose=False)
    hist = full["history"]
    assert [r.candidate.system for r in hist[1:3]] == list(SYSTEMS) and len(hist[1].candidate) == 0
    assert {r.candidate.prompt_role for r in hist[1:] if r.candidate.system} == {role}
    alone = full["prompt_alone"]
    assert alone is not None and alone.iteration in (1, 2) and alone.holdout_score is not None
    assert f"Prompting alone ({role}" in str(full)
    assert any(r.candidate.system is not None and len(r.candidate) for r in hist)  # prompt + steering tried
    cut = runner(tmp_path / "cut.tsv")
    cut.run(3, verbose=False)
    resumed = runner(tmp_path / "cut.tsv").run(6, resume=True, verbose=False)
    strip = lambda rs: [(r.iteration, r.status, r.candidate.key(), r.score, r.holdout_score) for r in rs]
    assert strip(resumed["history"]) == strip(hist)
    assert strip(read_log(tmp_path / "cut.tsv")) == strip(hist)


def test_bad_combinations_are_refused_before_work(model, tmp_path):
    tok = chat_tok()
    space = SteerSearchSpace(layer_range=(1, 2), texts=["happy"], system_prompts=SYSTEMS)
    kw = dict(search_space=space, log_path=tmp_path / "x.tsv", max_new_tokens=N_NEW)
    with pytest.raises(SearchSpaceError, match="needs chat=True"):
        AutoSteerRunner(model, tok, PROMPTS, metric=SteeredAnswer(pattern="a"), **kw)
    with pytest.raises(SearchSpaceError, match="custom metric"):
        AutoSteerRunner(model, tok, PROMPTS, metric=lambda m, t, p: 1.0, chat=True, **kw)
    conv = [[{"role": "system", "content": "x"}, {"role": "user", "content": p}] for p in PROMPTS]
    with pytest.raises(SearchSpaceError, match=r"prompts\[0\] starts with a system message"):
        AutoSteerRunner(model, tok, conv, metric=SteeredAnswer(pattern="a"), chat=True, **kw)
    refusing = chat_tok()
    refusing.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
        "{% endif %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(SearchSpaceError, match="cannot render a system message"):
        AutoSteerRunner(model, refusing, PROMPTS, metric=SteeredAnswer(pattern="a"), chat=True, **kw)
    assert not (tmp_path / "x.tsv").exists()


def test_tpe_proposes_system_prompts_inside_the_space():
    from autosteer.search.strategies.tpe import TPE
    from autosteer.search.trial import TrialRecord

    space = SteerSearchSpace(layer_range=(0, 2), texts=["happy", "calm"], system_prompts=SYSTEMS,
                             schedules=("none",))
    tpe = TPE(space, seed=0, n_startup=2)
    history = [TrialRecord(0, "baseline", SteerCandidate(), score=0.0)]
    for i, cand in enumerate(tpe.propose_round(history, 4)):
        history.append(TrialRecord(i + 1, "discard", cand, score=0.1 * i))
    assert [r.candidate.system for r in history[1:3]] == list(SYSTEMS)
    later = tpe.propose_round(history, 6)
    assert all(space.contains(c) and len(c) >= 1 for c in later)


def test_the_cli_searches_system_prompts_and_generates_with_the_best(model, tmp_path, capsys):
    import json

    from autosteer import cli

    folder, argv = cli_search(model, tmp_path, "--system-prompt", SYSTEMS[0])
    assert cli.main(argv) == 2 and "give --chat as well" in capsys.readouterr().err
    assert cli.main([*argv, "--chat"]) == 0
    capsys.readouterr()
    log = read_log(tmp_path / "log.tsv")
    assert log[1].candidate == SteerCandidate((), SYSTEMS[0])
    best = {"candidate": SteerCandidate((), SYSTEMS[0]).to_dict()}
    (tmp_path / "best.json").write_text(json.dumps(best))
    gen = ["generate", "--model", str(folder), "--config", str(tmp_path / "best.json"), "--max-new-tokens",
           str(N_NEW), "--json", PROMPTS[0]]
    assert cli.main(gen) == 2 and "give --chat" in capsys.readouterr().err
    assert cli.main([*gen, "--chat"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = greedy(model, chat_tok(), rendered_ids(chat_tok(), [{"role": "system", "content": SYSTEMS[0]},
                                                               {"role": "user", "content": PROMPTS[0]}]), N_NEW)
    assert out["generations"][0]["steered"] == chat_tok().decode(want, skip_special_tokens=True).strip()


# -- prompt_role="user": the prompt after the request's text, in the user's turn -------------------


def user_turn(prompt, text):
    return [{"role": "user", "content": f"{prompt}\n\n{text}"}]


def test_a_user_turn_prompt_is_its_own_candidate_and_keeps_system_keys():
    vec = {"layer_idx": 1, "coeff": 0.5, "text": "happy", "schedule": None}
    system = SteerCandidate.from_dict({"vectors": [vec], "system": "be brief"})
    user = SteerCandidate(system.vectors, "be brief", "user")
    assert system.key() == '{"system":"be brief","vectors":[{"coeff":0.5,"layer_idx":1,"schedule":null,"text":"happy"}]}'
    assert user != system and '"prompt_role":"user"' in user.key()
    assert SteerCandidate.from_json(user.key()) == user
    assert user.describe() == 'user "be brief" + L1 +0.5 "happy"'
    assert user.messages("hi") == user_turn("hi", "be brief")
    conv = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert user.messages(conv) == [*conv[:2], {"role": "user", "content": "c\n\nbe brief"}]
    assert conv[2]["content"] == "c"  # the caller's conversation is not changed
    assert "instruction = \"be brief\"" in user.to_code()
    assert SteerCandidate((), None, "user") == SteerCandidate()  # no prompt, no place
    with pytest.raises(InvalidArgumentError, match="must be a user message with text content"):
        user.messages([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    with pytest.raises(InvalidArgumentError, match="prompt_role must be 'system' or 'user', got str 'assistant'"):
        SteerCandidate((), "x", "assistant")


def test_the_space_places_every_prompt_where_it_says():
    import random

    space = SteerSearchSpace(layer_range=(0, 2), texts=["happy", "calm"], system_prompts=SYSTEMS,
                             schedules=("none",), prompt_role="user")
    assert SteerSearchSpace.from_dict(space.to_dict()) == space
    assert "prompt_role" not in space.replace(prompt_role="system").to_dict()  # earlier keys unchanged
    assert space.contains(SteerCandidate((), SYSTEMS[0], "user"))
    assert not space.contains(SteerCandidate((), SYSTEMS[0]))
    with pytest.raises(SearchSpaceError, match="prompt_role must be 'system' or 'user'"):
        SteerSearchSpace(texts=["happy"], prompt_role="User")
    from autosteer.search.strategies.tpe import TPE
    from autosteer.search.trial import TrialRecord

    rng = random.Random(1)
    drawn = [random_candidate(rng, space) for _ in range(100)]
    drawn += [perturb(rng, space, c) for c in drawn]
    history = [TrialRecord(0, "baseline", SteerCandidate(), score=0.0)]
    tpe = TPE(space, seed=0, n_startup=2)
    for i, cand in enumerate(tpe.propose_round(history, 4)):
        history.append(TrialRecord(i + 1, "discard", cand, score=0.1 * i))
    drawn += tpe.propose_round(history, 6) + LocalSearch(space, seed=2).propose_round([], 4)
    prompted = [c for c in drawn if c is not None and c.system is not None]
    assert prompted and all(c.prompt_role == "user" and space.contains(c) for c in prompted)


def test_generation_puts_the_prompt_in_the_users_turn(model):
    tok = chat_tok()
    ev = SteerEvaluator(model, tok, "task_accuracy", max_new_tokens=N_NEW, batch_size=3, chat=True)
    steer = Steer(model, tok)
    cands = [SteerCandidate((), s, "user") for s in SYSTEMS]
    from autosteer.search.metrics import MetricJob

    with torch.inference_mode():
        _, ids = ev.generate_with_ids(MetricJob(PROMPTS, None, cands, steer), early_stop=False)
        logp = ev.next_token_logprobs(MetricJob(PROMPTS, None, cands, steer))
    for g, system in enumerate(SYSTEMS):
        for p, prompt in enumerate(PROMPTS):
            rendered = rendered_ids(tok, user_turn(prompt, system))
            assert ids[g][p] == greedy(model, tok, rendered, N_NEW), (system, prompt)
            with torch.inference_mode():
                want = torch.log_softmax(model(input_ids=torch.tensor([rendered])).logits[0, -1].float(), -1)
            torch.testing.assert_close(logp[g][p], want, atol=1e-4, rtol=1e-4)


def test_a_user_turn_search_needs_no_system_role_and_generates_with_the_best(model, tmp_path, capsys):
    import json

    from autosteer import cli

    refusing = chat_tok()  # a template without a system role: fine when the prompt goes in the user's turn
    refusing.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
        "{% endif %}<{{ m['role'] }}> {{ m['content'] }}\n{% endfor %}<assistant>")
    space = SteerSearchSpace(layer_range=(1, 2), coeff_range=(0.2, 0.8), texts=["happy"], max_vectors=1,
                             schedules=("none",), system_prompts=SYSTEMS, prompt_role="user")
    metric = SteeredAnswer(pattern=r"the|a", fluency_margin=100.0)
    kw = dict(metric=metric, search_space=space, chat=True, population=3, max_new_tokens=N_NEW, seed=1)
    ended = [[{"role": "user", "content": p}, {"role": "assistant", "content": "ok"}] for p in PROMPTS]
    with pytest.raises(SearchSpaceError, match=r"prompts\[0\] does not end with a user message"):
        AutoSteerRunner(model, refusing, ended, log_path=tmp_path / "no.tsv", **kw)
    assert not (tmp_path / "no.tsv").exists()
    res = AutoSteerRunner(model, refusing, PROMPTS, log_path=tmp_path / "r.tsv", **kw).run(4, verbose=False)
    assert res["prompt_alone"].candidate == SteerCandidate((), res["prompt_alone"].candidate.system, "user")
    assert "Prompting alone (user " in str(res)
    assert [r.candidate for r in read_log(tmp_path / "r.tsv")] == [r.candidate for r in res["history"]]

    folder, argv = cli_search(model, tmp_path, "--chat", "--prompt-role", "user")
    assert cli.main(argv) == 2 and "give --system-prompt as well" in capsys.readouterr().err
    assert cli.main([*argv, "--system-prompt", SYSTEMS[0]]) == 0
    capsys.readouterr()
    assert read_log(tmp_path / "log.tsv")[1].candidate == SteerCandidate((), SYSTEMS[0], "user")
    (tmp_path / "best.json").write_text(json.dumps({"candidate": SteerCandidate((), SYSTEMS[1], "user").to_dict()}))
    gen = ["generate", "--model", str(folder), "--config", str(tmp_path / "best.json"), "--max-new-tokens",
           str(N_NEW), "--json", "--chat", PROMPTS[2]]
    assert cli.main(gen) == 0
    out = json.loads(capsys.readouterr().out)
    want = greedy(model, chat_tok(), rendered_ids(chat_tok(), user_turn(PROMPTS[2], SYSTEMS[1])), N_NEW)
    assert out["generations"][0]["steered"] == chat_tok().decode(want, skip_special_tokens=True).strip()
