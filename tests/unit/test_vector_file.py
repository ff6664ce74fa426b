"""Steering as files: safetensors round trips bit for bit; GGUF control vectors follow
llama.cpp's semantics (checked against a plain-torch reference of them); bad files are refused
with the file and the field named, and nothing applied."""

import json
import math

import numpy as np
import pytest
import torch
from tiny_models import make_model, make_tokenizer

from autosteer import Concept, CosineSchedule, DecaySchedule, InvalidArgumentError, Steer
from autosteer.steering.vector_file import DEFAULT_CALIBRATION, VectorFileError, read_gguf

gguf = pytest.importorskip("gguf")

POS = ["the cat is happy and calm", "a happy dog runs"]
NEG = ["the cat is old and grey", "a grey dog sits"]


def n_hooks(model):
    """AutoSteer's hooks on the model (transformers keeps hooks of its own for output_hidden_states)."""
    from autosteer.steering.steer import _is_autosteer_hook

    return sum(_is_autosteer_hook(h) for m in model.modules()
               for h in (*m._forward_pre_hooks.values(), *m._forward_hooks.values()))


def logits_over_generation(model, tok, steps=4):
    enc = tok(["the cat likes", "a dog"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=steps, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
    return torch.stack(out.scores)


def steered(model, tok):
    s = Steer(model, tok)
    s.add(1, 0.4, text="happy", coeff_schedule=DecaySchedule(0.8, 0.2))
    s.add(2, -0.3, vector=torch.randn(model.config.hidden_size))
    s.add(2, 0.25, concept=Concept("mood", POS, NEG), coeff_schedule=CosineSchedule(3, 0.1))
    return s


def test_safetensors_round_trip_is_bit_identical(tmp_path):
    model, tok = make_model("llama"), make_tokenizer("left")
    s = steered(model, tok)
    want = logits_over_generation(model, tok)
    rows = s.get_all()
    path = s.save(tmp_path / "steer.safetensors")
    s.reset_all()
    assert n_hooks(model) == 0
    loaded = Steer.load(model, tok, path)
    assert torch.equal(logits_over_generation(model, tok), want)
    assert loaded.get_all() == rows
    loaded.reset_all()


def test_safetensors_records_the_model_it_was_made_for(tmp_path):
    from safetensors import safe_open

    model, tok = make_model("llama"), make_tokenizer()
    path = steered(model, tok).save(tmp_path / "s.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    info = json.loads(meta["model"])
    assert info["class"] == "LlamaForCausalLM" and info["hidden_size"] == 32 and info["num_layers"] == 3
    vectors = json.loads(meta["vectors"])
    assert [v["source"]["kind"] for v in vectors] == ["text", "vector", "concept"]
    assert vectors[2]["source"]["concept"]["positive"] == POS and vectors[0]["schedule"]["type"] == "decay"
    other = make_model("gpt2")  # same width and depth, other weights' names
    with pytest.raises(VectorFileError, match="made for another model"):
        Steer.load(other, tok, path)
    Steer.load(other, tok, path, check_model=False).reset_all()


def llama_cpp_reference(model, tok, steer_vectors, calibration=DEFAULT_CALIBRATION, steps=32):
    """Plain torch: what llama.cpp computes with the exported file. Each AutoSteer vector at input
    layer L becomes coeff * mean(schedule) * r_L * direction added to the OUTPUT of layer L - 1,
    r_L the mean rms of layer L's input over the calibration prompts' tokens, the first excluded."""
    rms = {}
    for layer in {v["layer"] for v in steer_vectors}:
        vals = []
        for p in calibration:
            ids = tok(p, add_special_tokens=False)["input_ids"]
            with torch.inference_mode():
                hs = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
            h = hs[layer][0, 1:].float()
            vals.append(h.pow(2).mean(-1).add(1e-6).sqrt().mean())
        rms[layer] = float(torch.stack(vals).mean())
    per_layer = {}
    for v in steer_vectors:
        sched = 1.0 if v["schedule"] is None else float(np.mean([v["schedule"](k) for k in range(steps)]))
        vec = v["coeff"] * sched * rms[v["layer"]] * v["direction"]
        per_layer[v["layer"] - 1] = per_layer.get(v["layer"] - 1, 0) + vec
    handles = []
    for il, vec in per_layer.items():
        def hook(module, args, output, vec=vec):
            return output + vec if torch.is_tensor(output) else (output[0] + vec,) + tuple(output[1:])
        handles.append(model.model.layers[il].register_forward_hook(hook))
    return handles


def test_gguf_export_import_matches_llama_cpps_semantics(tmp_path):
    model, tok = make_model("llama"), make_tokenizer("left")
    model.config.num_hidden_layers = 3
    s = Steer(model, tok)
    s.add(2, 0.5, text="happy", coeff_schedule=DecaySchedule(0.8, 0.2))
    s.add(2, -0.3, text="grey")
    vectors = [{"layer": 2, "coeff": v["coeff"], "schedule": DecaySchedule(0.8, 0.2) if i == 0 else None,
                "direction": s._vectors[i].direction.clone()} for i, v in enumerate(s.get_all())]
    path = s.save(tmp_path / "cv.gguf")
    s.reset_all()
    # the file is what llama.cpp reads: direction.{il}, float32, one per layer, layer 0 never
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.architecture"].contents() == "controlvector"
    assert reader.fields["controlvector.model_hint"].contents() == "llama"
    assert [(t.name, int(np.prod(t.shape))) for t in reader.tensors] == [("direction.1", 32)]
    handles = llama_cpp_reference(model, tok, vectors)
    try:
        want = logits_over_generation(model, tok)
    finally:
        for h in handles:
            h.remove()
    imported = Steer.load(model, tok, path)
    assert imported.get_all()[0]["output_of_layer"] == 1
    torch.testing.assert_close(logits_over_generation(model, tok), want, rtol=1e-4, atol=1e-4)
    imported.reset_all()
    assert n_hooks(model) == 0


def test_a_repeng_style_file_imports(tmp_path):
    model, tok = make_model("llama"), make_tokenizer()
    path = tmp_path / "repeng.gguf"
    w = gguf.GGUFWriter(str(path), "controlvector")
    w.add_string("controlvector.model_hint", "llama")
    w.add_uint32("controlvector.layer_count", 2)
    rng = np.random.default_rng(0)
    vecs = {il: rng.standard_normal(32).astype(np.float32) for il in (1, 2)}
    for il, v in vecs.items():
        w.add_tensor(f"direction.{il}", v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    got, _ = read_gguf(path)
    assert sorted(got) == [1, 2] and np.array_equal(got[2], vecs[2])
    s = Steer.load(model, tok, path)
    enc = tok(["the cat likes"], return_tensors="pt")
    with torch.inference_mode():
        a = model(**enc).logits
    s.reset_all()
    handles = [model.model.layers[il].register_forward_hook(
        lambda m, i, o, v=torch.from_numpy(v): o + v if torch.is_tensor(o) else (o[0] + v,) + tuple(o[1:]))
        for il, v in vecs.items()]
    with torch.inference_mode():
        b = model(**enc).logits
    for h in handles:
        h.remove()
    torch.testing.assert_close(a, b)


def test_what_cannot_be_exported_is_refused(tmp_path):
    model, tok = make_model("llama"), make_tokenizer()
    s = Steer(model, tok)
    s.add(0, 0.3, text="happy")
    with pytest.raises(InvalidArgumentError, match=r"vector\(s\) 0 \(layer 0\) cannot be exported") as info:
        s.save(tmp_path / "a.gguf")
    # it says why (llama.cpp has no layer-0 vector) and what to do (move it to layer >= 2)
    assert "llama.cpp has no control vector for layer 0" in str(info.value)
    assert "add it again with layer_idx >= 2" in str(info.value)
    s.reset_all()
    # following the advice exports
    s.add(2, 0.3, text="happy")
    s.save(tmp_path / "a.gguf").unlink()
    s.reset_all()
    s.add(2, 0.3, text="happy", steering_method=lambda h, step, layer: h * 0)
    with pytest.raises(InvalidArgumentError, match="steering_method"):
        s.save(tmp_path / "a.safetensors")
    s.reset_all()
    s.add(2, 0.3, text="happy", coeff_schedule=lambda step: 0.5)
    with pytest.raises(InvalidArgumentError, match="custom schedule"):
        s.save(tmp_path / "a.safetensors")
    s.reset_all()
    with pytest.raises(InvalidArgumentError, match="nothing to save"):
        s.save(tmp_path / "a.safetensors")
    with pytest.raises(InvalidArgumentError, match="from its extension"):
        s.save(tmp_path / "a.bin")
    assert not list(tmp_path.iterdir())


def _finish(w):
    """Write a GGUFWriter's header, metadata and tensors, then close it."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _bad_files(tmp_path, model, tok):
    s = steered(model, tok)
    good = s.save(tmp_path / "good.safetensors")
    s.reset_all()
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(good), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(good))
    out = {}
    (tmp_path / "cut.safetensors").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    out["cut.safetensors"] = "not a readable safetensors file"
    save_file(tensors, str(tmp_path / "v9.safetensors"), metadata={**meta, "format_version": "9"})
    out["v9.safetensors"] = "'format_version' is '9'"
    nan = dict(tensors)
    nan["vector.1.direction"] = torch.full_like(nan["vector.1.direction"], math.nan)
    save_file(nan, str(tmp_path / "nan.safetensors"), metadata=meta)
    out["nan.safetensors"] = "tensor 'vector.1.direction' holds NaN"
    wide = json.loads(meta["model"])
    wide["hidden_size"] = 64
    save_file(tensors, str(tmp_path / "wide.safetensors"), metadata={**meta, "model": json.dumps(wide)})
    out["wide.safetensors"] = "made for a model with hidden_size 64"
    w = gguf.GGUFWriter(str(tmp_path / "deep.gguf"), "controlvector")
    w.add_tensor("direction.7", np.ones(32, dtype=np.float32))
    _finish(w)
    out["deep.gguf"] = r"'direction.7' is for layer 7, but LlamaForCausalLM has 3 layers"
    w = gguf.GGUFWriter(str(tmp_path / "narrow.gguf"), "controlvector")
    w.add_tensor("direction.1", np.ones(16, dtype=np.float32))
    _finish(w)
    out["narrow.gguf"] = "has 16 values, but LlamaForCausalLM's hidden size is 32"
    w = gguf.GGUFWriter(str(tmp_path / "nan.gguf"), "controlvector")
    w.add_tensor("direction.1", np.full(32, np.nan, dtype=np.float32))
    _finish(w)
    out["nan.gguf"] = "'direction.1' holds NaN"
    w = gguf.GGUFWriter(str(tmp_path / "model.gguf"), "llama")
    w.add_tensor("token_embd.weight", np.ones((4, 32), dtype=np.float32))
    _finish(w)
    out["model.gguf"] = "'general.architecture' is 'llama', expected 'controlvector'"
    (tmp_path / "cut.gguf").write_bytes((tmp_path / "nan.gguf").read_bytes()[:40])
    out["cut.gguf"] = "not a readable GGUF file"
    return out


def test_bad_files_name_the_file_and_field_and_apply_nothing(tmp_path):
    model, tok = make_model("llama"), make_tokenizer()
    for name, match in _bad_files(tmp_path, model, tok).items():
        with pytest.raises(VectorFileError, match=match) as info:
            Steer.load(model, tok, tmp_path / name)
        assert name in str(info.value)
        assert n_hooks(model) == 0, name


def _edited(tmp_path, src, name, edit):
    """A copy of the safetensors file ``src`` with its tensors/metadata changed by ``edit``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    entries = json.loads(meta["vectors"])
    edit(entries, tensors)
    meta["vectors"] = json.dumps(entries)
    save_file(tensors, str(tmp_path / name), metadata=meta)
    return tmp_path / name


def _rename_schedule(entries, tensors):
    entries[0]["schedul"] = entries[0].pop("schedule")


def _extra_tensor(entries, tensors):
    tensors["vector.9.direction"] = torch.ones(32)


@pytest.mark.parametrize("edit,match", [
    # an entry removed: its tensor is left over (and the next entries point at the wrong tensors)
    (lambda entries, tensors: entries.pop(0), r"tensor\(s\) 'vector.2.direction' are described by no entry"),
    (_rename_schedule, r"metadata 'vectors'\[0\] lacks 'schedule' and has the unknown key\(s\) 'schedul'"),
    (_extra_tensor, r"tensor\(s\) 'vector.9.direction' are described by no entry"),
    (lambda entries, tensors: entries[1]["source"].update(kind="text"), r"metadata 'vectors'\[1\]: 'source' must be"),
    (lambda entries, tensors: entries[2].update(layer_idx=7), r"metadata 'vectors'\[2\] is malformed \(layer_idx 7"),
])
def test_an_edited_safetensors_file_is_refused_naming_the_file_and_entry(tmp_path, edit, match):
    """Issue 17 item 18: every entry needs exactly its keys and its tensor, every tensor an entry."""
    model, tok = make_model("llama"), make_tokenizer()
    s = steered(model, tok)
    path = s.save(tmp_path / "steer.safetensors")
    s.reset_all()
    Steer.load(model, tok, path).reset_all()  # the unedited file loads
    bad = _edited(tmp_path, path, "edited.safetensors", edit)
    with pytest.raises(VectorFileError, match=match) as info:
        Steer.load(model, tok, bad)
    assert str(bad) in str(info.value)
    assert n_hooks(model) == 0
