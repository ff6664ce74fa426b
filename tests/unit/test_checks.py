"""The shared argument checks (autosteer/_checks.py) and every public option that uses them:
a flag that is not a bool, and a single string or a dict where a list is expected, are
refused with a TypeError naming the argument, before any work (issue 17 items 8, 9, 11)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import tiny_models
import torch

from autosteer import (
    ArgumentTypeError,
    AutoSteerError,
    Concept,
    InvalidArgumentError,
    Steer,
)
from autosteer._checks import (
    check_bool,
    check_int,
    check_list,
    check_real,
    check_str_list,
)


# ------------------------------------------------------------------ the helpers
def test_argument_type_error_is_both_a_type_error_and_an_invalid_argument():
    assert issubclass(ArgumentTypeError, TypeError)
    assert issubclass(ArgumentTypeError, InvalidArgumentError)
    assert issubclass(ArgumentTypeError, ValueError)  # as InvalidArgumentError always was
    assert issubclass(ArgumentTypeError, AutoSteerError)


@pytest.mark.parametrize("value", [True, False, np.bool_(True), np.bool_(False)])
def test_check_bool_takes_bools(value):
    out = check_bool("flag", value)
    assert type(out) is bool and out == bool(value)


@pytest.mark.parametrize("value", ["no", "False", "", 0, 1, 1.0, None, [], np.int64(1), torch.tensor(True)])
def test_check_bool_refuses_everything_else_naming_the_option(value):
    with pytest.raises(TypeError, match=r"^flag must be True or False, got "):
        check_bool("flag", value)


def test_check_bool_allow_none():
    assert check_bool("flag", None, allow_none=True) is None
    with pytest.raises(ArgumentTypeError, match=r"flag must be True, False or None, got str 'yes'"):
        check_bool("flag", "yes", allow_none=True)


@pytest.mark.parametrize("value,out", [
    (["a", "b"], ["a", "b"]), (("a",), ["a"]), (iter(["x", "y"]), ["x", "y"]), ([], []),
    (np.array(["a", "b"]).tolist(), ["a", "b"]), (range(2), [0, 1]),
])
def test_check_list_takes_list_likes(value, out):
    assert check_list("prompts", value) == out


@pytest.mark.parametrize("value,match", [
    ("precise", r"prompts must be a list of strings, got a single string 'precise'; wrap it in a list"),
    (b"precise", r"prompts must be a list of strings, got a single bytes object"),
    ({"a": 1}, r"prompts must be a list of strings, got a dict \(iterating it would give its keys\)"),
    (OrderedDict(a=1), r"got a OrderedDict"),
    ({"a", "b"}, r"got a set, which has no order"),
    (3, r"prompts must be a list of strings, got int 3"),
    (None, r"prompts must be a list of strings, got NoneType None"),
])
def test_check_list_refuses_strings_mappings_and_non_iterables(value, match):
    with pytest.raises(TypeError, match=match):
        check_list("prompts", value)


def test_check_str_list_names_the_bad_item():
    assert check_str_list("texts", ("a", "b")) == ["a", "b"]
    with pytest.raises(ArgumentTypeError, match=r"texts\[1\] must be a string, got int 3"):
        check_str_list("texts", ["a", 3])
    with pytest.raises(InvalidArgumentError, match="texts is empty"):
        check_str_list("texts", [], allow_empty=False)


def test_wrong_types_of_numbers_are_type_errors_too():
    with pytest.raises(TypeError, match="n must be an integer, got str '3'"):
        check_int("n", "3")
    with pytest.raises(TypeError, match="x must be a real number, got bool True"):
        check_real("x", True)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):  # a bad value stays a ValueError
        check_int("n", 0, minimum=1)


# ------------------------------------------------------------------ the public API
@pytest.fixture(scope="module")
def llama():
    tok = tiny_models.make_tokenizer(padding_side="left")
    return tiny_models.make_model("llama"), tok


def _no_forward(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("option", ["copy_model", "copyModel"])
def test_steer_copy_model_no_is_refused_not_a_deep_copy(llama, option):
    model, tok = llama
    with pytest.raises(TypeError, match=f"{option} must be True or False, got str 'no'"):
        Steer(model, tok, **{option: "no"})
    assert Steer(model, tok, copy_model=False).model is model


def test_steer_load_check_model(llama, tmp_path):
    model, tok = llama
    s = Steer(model, tok)
    s.add(1, 0.5, vector=torch.ones(tiny_models.HIDDEN_SIZE))
    path = s.save(tmp_path / "v.safetensors")
    s.reset_all()
    with pytest.raises(TypeError, match="check_model must be True or False, got str 'no'"):
        Steer.load(model, tok, path, check_model="no")
    Steer.load(model, tok, path, check_model=False).reset_all()


def test_tpe_lower_is_better():
    pytest.importorskip("optuna")
    from autosteer import SteerSearchSpace, TPESearch

    space = SteerSearchSpace(layer_range=(0, 2)).resolve(3)
    with pytest.raises(TypeError, match="lower_is_better must be True or False, got str 'no'"):
        TPESearch(space, lower_is_better="no")
    assert TPESearch(space, lower_is_better=True).lower_is_better is True


def test_load_model_progress_is_checked_before_loading(monkeypatch):
    from autosteer import load_model, organism

    monkeypatch.setattr(organism, "load_organism", lambda **kw: pytest.fail("loaded a model"))
    with pytest.raises(TypeError, match="progress must be True, False or None, got str 'no'"):
        load_model("organism", progress="no")


def test_gguf_cache_progress(tmp_path):
    from autosteer.models import gguf_cache

    with pytest.raises(TypeError, match="progress must be True or False, got int 1"):
        gguf_cache(tmp_path / "x.gguf", progress=1)


def test_evaluator_flags(llama):
    from autosteer import SteerEvaluator

    model, tok = llama
    for option in ("early_stop", "chat"):
        with pytest.raises(TypeError, match=f"{option} must be True or False, got str 'no'"):
            SteerEvaluator(model, tok, **{option: "no"})


@pytest.mark.parametrize("option,value,match", [
    ("chat", "no", "chat must be True or False"),
    ("lower_is_better", "no", "lower_is_better must be True, False or None"),
])
def test_runner_flags(llama, tmp_path, option, value, match):
    from autosteer import AutoSteerRunner

    model, tok = llama
    with pytest.raises(TypeError, match=match):
        AutoSteerRunner(model, tok, ["a prompt"], metric="perplexity", log_path=tmp_path / "log.tsv",
                        **{option: value})


@pytest.mark.parametrize("option,value,match", [
    ("verbose", "no", "verbose must be True or False"),
    ("overwrite", 1, "overwrite must be True or False"),
])
def test_run_flags(llama, tmp_path, option, value, match):
    from autosteer import AutoSteerRunner

    model, tok = llama
    runner = AutoSteerRunner(model, tok, ["a prompt"], metric="perplexity", log_path=tmp_path / "log.tsv")
    with pytest.raises(TypeError, match=match):
        runner.run(1, **{option: value})
    assert not (tmp_path / "log.tsv").exists()


def test_runner_run_resume_and_read_log(llama, tmp_path):
    from autosteer import AutoSteerRunner, read_log

    model, tok = llama
    runner = AutoSteerRunner(model, tok, ["the cat sees a book"], metric="perplexity",
                             log_path=tmp_path / "log.tsv")
    with pytest.raises(TypeError, match="resume must be True or False, got str 'no'"):
        runner.run(0, resume="no", verbose=False)
    assert not (tmp_path / "log.tsv").exists()
    runner.run(0, verbose=False)
    with pytest.raises(TypeError, match="allow_incomplete must be True or False"):
        read_log(tmp_path / "log.tsv", allow_incomplete="yes")


def test_candidate_flags():
    from autosteer import SteerCandidate

    cand = SteerCandidate.from_dict({"vectors": [{"layer_idx": 0, "coeff": 0.5, "text": "x", "schedule": None}]})
    with pytest.raises(TypeError, match="full must be True or False"):
        cand.to_dict(full="yes")
    with pytest.raises(TypeError, match="imports must be True or False"):
        cand.to_code(imports="no")


def test_demo_verbose(tmp_path):
    from autosteer.demo import run_demo

    with pytest.raises(TypeError, match="verbose must be True or False"):
        run_demo(out=tmp_path / "demo", verbose="no")
    assert not (tmp_path / "demo").exists()


# ------------------------------------------------------------------ lists of strings
@pytest.mark.parametrize("bad,match", [
    ("precise", r"prompts must be a list of strings, got a single string 'precise'"),
    ({"a prompt": "7"}, r"prompts must be a list of strings, got a dict"),
])
def test_evaluator_generate_refuses_a_string_or_a_dict(llama, bad, match):
    from autosteer import SteerEvaluator

    model, tok = llama
    ev = SteerEvaluator(model, tok, max_new_tokens=2)
    calls, handle = _no_forward(model)
    try:
        with pytest.raises(TypeError, match=match):
            ev.generate(bad)
    finally:
        handle.remove()
    assert calls == []
    assert len(ev.generate(["precise"])) == 1


@pytest.mark.parametrize("prompts,expected,match", [
    ("what is 3 plus 4 ?", ["7"], r"prompts must be a list of strings, got a single str"),
    ({"what is 3 plus 4 ?": "7"}, ["7"], r"prompts must be a list of strings, got a dict"),
    (["what is 3 plus 4 ?"], "7", r"expected_outputs must be a list of strings, got a single string '7'"),
    (["what is 3 plus 4 ?"], {"7": 1}, r"expected_outputs must be a list of strings, got a dict"),
])
def test_evaluator_evaluate_refuses_a_string_or_a_dict(llama, prompts, expected, match):
    from autosteer import SteerEvaluator

    model, tok = llama
    ev = SteerEvaluator(model, tok, max_new_tokens=2)
    calls, handle = _no_forward(model)
    try:
        with pytest.raises(TypeError, match=match):
            ev.evaluate(prompts, expected)
        with pytest.raises(TypeError, match=match):
            ev.evaluate_candidates(Steer(model, tok), [], prompts, expected)
    finally:
        handle.remove()
    assert calls == []


@pytest.mark.parametrize("kwargs,match", [
    (dict(prompts="the cat"), r"^prompts must be a list of strings, got a single str"),
    (dict(prompts={"the cat": 1}), r"^prompts must be a list of strings, got a dict"),
    (dict(prompts=["the cat"], expected_outputs="7"), r"^expected_outputs must be a list of strings, got a single"),
    (dict(prompts=["the cat"], expected_outputs={"7": 1}), r"^expected_outputs must be a list of strings, got a dict"),
    (dict(prompts=["the cat"], expected_outputs=["7"], holdout="a dog"),
     r"^holdout must be a list of strings, got a single"),
    (dict(prompts=["the cat"], expected_outputs=["7"], holdout={"a dog": 1}),
     r"^holdout must be a list of strings, got a dict"),
    (dict(prompts=["the cat"], expected_outputs=["7"], holdout=(["a dog"], "7")),
     r"^holdout\[1\] must be a list of strings, got a single"),
    (dict(prompts=["the cat"], expected_outputs=["7"], holdout=(["a dog"], {"7": 0})),
     r"^holdout\[1\] must be a list of strings, got a dict"),
])
def test_runner_refuses_a_string_or_a_dict(llama, tmp_path, kwargs, match):
    from autosteer import AutoSteerRunner

    model, tok = llama
    with pytest.raises(TypeError, match=match):
        AutoSteerRunner(model, tok, metric="task_accuracy", log_path=tmp_path / "log.tsv", **kwargs)


@pytest.mark.parametrize("bad,match", [
    ("precise", r"calibration_prompts must be a list of strings, got a single string 'precise'"),
    ({"precise": 1}, r"calibration_prompts must be a list of strings, got a dict"),
    (["a text", 3], r"calibration_prompts\[1\] must be a string, got int 3"),
])
def test_save_calibration_prompts(llama, tmp_path, bad, match):
    pytest.importorskip("gguf")
    model, tok = llama
    s = Steer(model, tok)
    s.add(2, 0.5, vector=torch.ones(tiny_models.HIDDEN_SIZE))
    try:
        with pytest.raises(TypeError, match=match):
            s.save(tmp_path / "v.gguf", calibration_prompts=bad)
    finally:
        s.reset_all()
    assert not (tmp_path / "v.gguf").exists()


@pytest.mark.parametrize("side", ["positive", "negative"])
@pytest.mark.parametrize("bad,match", [
    ("a careful answer", r"got a single string 'a careful answer'"),
    ({"a careful answer": 1, "a precise answer": 2}, r"got a dict"),
])
def test_concept_sides(side, bad, match):
    good = ["a plain answer", "an answer"]
    kwargs = {"positive": good, "negative": good, side: bad}
    with pytest.raises(TypeError, match=f"concept 'careful': {side} must be a list of texts or conversations, {match}"):
        Concept("careful", **kwargs)


def test_search_space_texts():
    from autosteer import SteerSearchSpace

    assert SteerSearchSpace(texts="logical").texts == ("logical",)  # one string is one text (documented)
    with pytest.raises(TypeError, match=r"texts must be a list of strings or Concepts, got a dict"):
        SteerSearchSpace(texts={"logical": 1, "precise": 2})
    concept = Concept("c", ["a plain answer"], ["an answer"]).to_dict()
    with pytest.raises(TypeError, match=r"negative_texts must be a list of strings or Concepts, got a dict"):
        SteerSearchSpace(negative_texts=concept)
    with pytest.raises(TypeError, match=r"schedules must be a list of schedule names, got a dict"):
        SteerSearchSpace(schedules={"decay": 1})
