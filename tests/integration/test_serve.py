"""``autosteer serve``: the OpenAI-compatible app with per-request steering.

In process through ``httpx.ASGITransport``, and over a real uvicorn on 127.0.0.1 (the CLI in
a subprocess) with the ``openai`` client.  Every greedy answer is compared with the
reference a user would write: ``Steer.add(...)`` + ``model.generate`` on the request alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi import APIRouter, Request

from autosteer import Concept, InvalidArgumentError, Steer, SteerCandidate
from autosteer.organism import load_organism

ROOT = Path(__file__).resolve().parents[2]
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} . {% endfor %}"
                 "{% if add_generation_prompt %}assistant : {% endif %}")
PROMPTS = ["what is 3 plus 4 ?", "what is 12 plus 5 ?", "a logical answer : what is 7 plus 8 ?",
           "what is 1 plus 19 ?", "what is 9 plus 9 ?"]
CONCEPT = Concept("careful", positive=["a logical answer :", "a precise answer :"],
                  negative=["a confused answer :", "an answer :"])


@pytest.fixture(scope="module")
def organism():
    model, tok = load_organism()
    tok.chat_template = CHAT_TEMPLATE
    return model, tok


@pytest.fixture(scope="module")
def preset_files(organism, tmp_path_factory):
    model, tok = organism
    d = tmp_path_factory.mktemp("presets")
    best = SteerCandidate.from_dict([{"layer_idx": 1, "coeff": 0.5, "text": CONCEPT}])
    (d / "best.json").write_text(json.dumps(best.to_dict(full=True)))
    with Steer(model, tok) as s:
        s.add(0, 0.6, text="precise", coeff_schedule={"type": "warmup", "steps": 3, "start": 0.0})
        s.save(d / "precise.safetensors")
    return {"careful": str(d / "best.json"), "precise": str(d / "precise.safetensors")}


@pytest.fixture(scope="module")
def app(organism, preset_files):
    from autosteer.serve import create_app

    model, tok = organism
    app = create_app(model, tok, presets=preset_files, model_name="organism", max_batch=3, max_tokens=12,
                     max_waiting=64)
    yield app
    assert app.state.close(timeout=30)


def reference(model, tok, ids, vectors, max_tokens, count=False):
    """What a user gets in process: Steer.add(...) for each vector, then greedy model.generate."""
    with Steer(model, tok) as s:
        for v in vectors:
            kw = {k: v[k] for k in ("text", "concept", "vector") if k in v}
            if "vector" in kw:
                kw["vector"] = torch.tensor(kw["vector"])
            s.add(v["layer_idx"], v["coeff"], coeff_schedule=v.get("schedule"), **kw)
        with torch.inference_mode():
            out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    text = tok.decode(out[0, len(ids):], skip_special_tokens=True)
    return (text, out.shape[1] - len(ids)) if count else text


def post(app, path, body, **kw):
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return await c.post(path, json=body, **kw)
    return asyncio.run(go())


def _hooks(model) -> int:
    """AutoSteer hooks on the model, once the engine has gone idle (it clears them then)."""
    deadline = time.monotonic() + 10
    while True:
        n = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())
        if n == 0 or time.monotonic() > deadline:
            return n
        time.sleep(0.05)


def test_models_presets_and_unknown_model(app, organism):
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return (await c.get("/v1/models")).json(), (await c.get("/v1/presets")).json(), \
                await c.post("/v1/completions", json={"model": "gpt-4", "prompt": "hi"}), \
                await c.post("/v1/completions", json={"model": "organism+nope", "prompt": "hi"})
    models, presets, unknown, unknown_preset = asyncio.run(go())
    assert [m["id"] for m in models["data"]] == ["organism", "organism+careful", "organism+precise"]
    assert presets["model"] == {"id": "organism", "num_layers": 8, "hidden_size": 96}
    by_name = {p["name"]: p for p in presets["data"]}
    assert by_name["careful"]["vectors"] == [{"layer_idx": 1, "coeff": 0.5, "concept": CONCEPT.ref(), "schedule": None}]
    assert by_name["careful"]["concepts"][CONCEPT.hash]["positive"] == list(CONCEPT.positive)
    (vec,) = by_name["precise"]["vectors"]
    assert vec["layer_idx"] == 0 and vec["coeff"] == 0.6 and len(vec["vector"]) == 96
    assert vec["schedule"]["type"] == "warmup"
    for r in (unknown, unknown_preset):
        assert r.status_code == 404
        assert r.json()["error"]["param"] == "model" and r.json()["error"]["code"] == "model_not_found"


def _cases(tok, preset_files):
    """(request body, the vectors of the in-process reference): mixed configurations."""
    vec = torch.linspace(-1, 1, 96)
    vec = (vec / vec.pow(2).mean().sqrt()).tolist()
    steerings = [
        None,
        [{"layer_idx": 0, "coeff": 0.5, "text": "logical"}],
        [{"layer_idx": 2, "coeff": 0.8, "text": "confused"}, {"layer_idx": 0, "coeff": 0.3, "text": "precise"}],
        [{"layer_idx": 1, "coeff": 0.7, "text": "logical",
          "coeff_schedule": {"type": "decay", "rate": 0.7, "min_multiplier": 0.1, "times_restart": 0}}],
        "careful",
        [{"layer_idx": 3, "coeff": 1.5, "vector": vec}],
        [{"layer_idx": 1, "coeff": 0.5, "concept": "careful"}],
        [{"layer_idx": 0, "coeff": -0.4, "text": "logical"}],
        None,
        [{"layer_idx": 5, "coeff": 2.0, "text": "what"}],
    ]
    refs = {"careful": [{"layer_idx": 1, "coeff": 0.5, "concept": CONCEPT}]}
    cases = []
    for i, st in enumerate(steerings):
        prompt = PROMPTS[i % len(PROMPTS)]
        body = {"model": "organism", "prompt": prompt, "max_tokens": 4 + i % 5, "temperature": 0,
                "stream": i % 3 == 0}
        if st is not None:
            body["steering"] = st
        if isinstance(st, str):
            ref = refs[st]
        elif st is None:
            ref = []
        else:
            ref = [{**v, "concept": CONCEPT} if v.get("concept") == "careful" else dict(v) for v in st]
            for v in ref:
                if "coeff_schedule" in v:
                    v["schedule"] = v.pop("coeff_schedule")
        cases.append((body, ref, tok(prompt)["input_ids"]))
    return cases


async def _run(client, body):
    if not body.get("stream"):
        r = await client.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"], r.json()["usage"]
    parts, usage = [], None
    async with client.stream("POST", "/v1/completions", json={**body, "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in r.aiter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        chunk = json.loads(line[len("data: "):])
        if chunk["choices"]:
            parts.append(chunk["choices"][0]["text"])
        else:
            usage = chunk["usage"]
    return "".join(parts), usage


def test_concurrent_mixed_steering_equals_alone_and_in_process(app, organism, preset_files):
    model, tok = organism
    cases = _cases(tok, preset_files)
    counted = [reference(model, tok, ids, ref, body["max_tokens"], count=True) for body, ref, ids in cases]
    expected = [text for text, _ in counted]
    assert len(set(expected)) >= 5  # the configurations really differ

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                                     timeout=120) as c:
            together = await asyncio.gather(*[_run(c, body) for body, _, _ in cases])
            alone = [await _run(c, body) for body, _, _ in cases[:4]]
            return together, alone
    engine = app.state.autosteer.engine
    before = engine.stats["max_rows"]
    joined = engine.stats["joined_running"]
    together, alone = asyncio.run(go())
    assert engine.stats["joined_running"] > joined  # requests joined a batch that was decoding
    assert [t for t, _ in together] == expected
    assert [t for t, _ in alone] == expected[:4]
    for (body, _, ids), (text, usage), (_, n_new) in zip(cases, together, counted):
        assert usage["prompt_tokens"] == len(ids)
        assert usage["completion_tokens"] == n_new  # the end token counts, as generate() returns it
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert engine.stats["max_rows"] == 3 or before == 3  # rows were batched (max_batch=3)
    assert engine.busy == 0
    assert _hooks(model) == 0  # idle: no steering left on the model


def test_chat_completions_apply_the_chat_template(app, organism):
    model, tok = organism
    messages = [{"role": "user", "content": "what is 3 plus 4 ?"}]
    st = [{"layer_idx": 0, "coeff": 0.5, "text": "logical"}]
    r = post(app, "/v1/chat/completions", {"model": "organism", "messages": messages, "max_completion_tokens": 5,
                                           "temperature": 0, "steering": st})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "chat.completion" and out["choices"][0]["message"]["role"] == "assistant"
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert out["choices"][0]["message"]["content"] == reference(model, tok, ids, st, 5)
    assert out["usage"]["prompt_tokens"] == len(ids)


def test_model_plus_preset_is_the_preset(app, organism):
    model, tok = organism
    body = {"model": "organism+careful", "prompt": PROMPTS[0], "max_tokens": 6, "temperature": 0}
    r = post(app, "/v1/completions", body)
    assert r.status_code == 200, r.text
    ids = tok(PROMPTS[0])["input_ids"]
    assert r.json()["choices"][0]["text"] == reference(model, tok, ids, [{"layer_idx": 1, "coeff": 0.5,
                                                                          "concept": CONCEPT}], 6)
    assert r.json()["model"] == "organism+careful"


def test_sampling_seed_and_stop(app, organism):
    body = {"model": "organism", "prompt": "a", "max_tokens": 10, "temperature": 2.0, "top_p": 0.99, "seed": 1234}

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            rs = await asyncio.gather(*[c.post("/v1/completions", json=b) for b in
                                        [body, body] + [{**body, "seed": k} for k in range(6)]])
            return [r.json()["choices"][0]["text"] for r in rs]
    texts = asyncio.run(go())
    assert texts[0] == texts[1]  # same seed, same text, whatever else shares the batch
    assert len(set(texts)) >= 2
    # stop: the text ends before the first stop string, finish_reason "stop"
    model, tok = organism
    full = reference(model, tok, tok(PROMPTS[2])["input_ids"], [{"layer_idx": 0, "coeff": 0.5, "text": "logical"}], 10)
    stop = full.strip().split()[1] if len(full.split()) > 1 else full.strip()[-1]
    r = post(app, "/v1/completions", {"model": "organism", "prompt": PROMPTS[2], "max_tokens": 10, "temperature": 0,
                                      "stop": [stop], "steering": [{"layer_idx": 0, "coeff": 0.5, "text": "logical"}]})
    choice = r.json()["choices"][0]
    assert choice["text"] == full[: full.find(stop)] and choice["finish_reason"] == "stop"


BAD = [
    (b'{"model": "organism", "prompt": "hi", "temperature": NaN}', None, "NaN"),
    (b'{"model": "organism", "prompt": "hi", "steering": [{"layer_idx": 0, "coeff": Infinity, "text": "a"}]}',
     None, "Infinity"),
    (b'{"model": "organism", "prompt": "hi"', None, "not valid JSON"),
    (b'[1, 2]', None, "JSON object"),
    ({"model": "organism", "prompt": "hi", "steering": "nope"}, "steering", "unknown preset 'nope'"),
    ({"model": "organism", "prompt": "hi", "steering": [{"layer_idx": 8, "coeff": 0.5, "text": "a"}]},
     "steering[0].layer_idx", "8 decoder layers"),
    ({"model": "organism", "prompt": "hi", "steering": [{"layer_idx": 0, "coeff": 1e6, "text": "a"}]},
     "steering[0].coeff", "|coeff|"),
    ({"model": "organism", "prompt": "hi", "steering": [{"layer_idx": 0, "coeff": "big", "text": "a"}]},
     "steering[0].coeff", "must be a number"),
    ({"model": "organism", "prompt": "hi", "steering": [{"layer_idx": 0, "coeff": 1, "vector": [0.1] * 95}]},
     "steering[0].vector", "hidden size is 96"),
    ({"model": "organism", "prompt": "hi", "steering": [{"layer_idx": 0, "coeff": 1, "text": "a",
                                                          "schedule": {"type": "zigzag"}}]},
     "steering[0].schedule", "unknown type 'zigzag'"),
    ({"model": "organism", "prompt": "hi", "steering": [{"layer_idx": 0, "coeff": 1, "text": "a",
                                                          "schedule": {"type": "decay", "rate": 0.5,
                                                                       "min_multiplier": 2.0, "times_restart": 1}}]},
     "steering[0].schedule", "min"),
    ({"model": "organism", "prompt": "hi", "steering": [{"layer_idx": 0, "coeff": 1}]},
     "steering[0]", "exactly one of text, concept or vector"),
    ({"model": "organism", "prompt": "hi", "steering": [{"layer_idx": 0, "coeff": 1, "concept": "nope"}]},
     "steering[0].concept", "not a concept of any preset"),
    ({"model": "organism", "prompt": "hi", "steering": [{"layer_idx": 0, "coeff": 1, "text": "a", "colour": 1}]},
     "steering[0].colour", "unknown key"),
    ({"model": "organism", "prompt": "hi", "steering": {"layer_idx": 0}}, "steering", "preset name"),
    ({"model": "organism", "prompt": 5}, "prompt", "must be a string"),
    ({"model": "organism", "prompt": "hi", "max_tokens": 0}, "max_tokens", "between 1 and 12"),
    ({"model": "organism", "prompt": "hi", "max_tokens": 13}, "max_tokens", "between 1 and 12"),
    ({"model": "organism", "prompt": "hi", "max_tokens": "4"}, "max_tokens", "integer"),
    ({"model": "organism", "prompt": "hi", "temperature": 3}, "temperature", "between 0 and 2"),
    ({"model": "organism", "prompt": "hi", "n": 2}, "n", "n must be 1"),
    ({"model": "organism", "prompt": "hi", "stream": "yes"}, "stream", "true or false"),
    ({"model": "organism", "prompt": "hi", "stop": [1]}, "stop", "stop must be"),
    ({"model": "organism", "prompt": "hi", "bogus": 1}, "bogus", "unknown field 'bogus'"),
    ({"prompt": "hi"}, "model", "model must be a string"),
    ({"model": "organism+careful", "prompt": "hi", "steering": "precise"}, "steering", "selects preset"),
]


@pytest.mark.parametrize("body,param,words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_400_naming_the_field(app, organism, body, param, words):
    if isinstance(body, bytes):
        r = post(app, "/v1/completions", None, content=body, headers={"content-type": "application/json"})
    else:
        r = post(app, "/v1/completions", body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param"}
    assert err["type"] == "invalid_request_error" and err["param"] == param
    assert words in err["message"]
    if param and param != "model":
        assert param.split(".")[-1].split("[")[0] in err["message"]


def test_chat_bad_messages(app):
    for messages, param in (([], "messages"), ([{"role": "robot", "content": "x"}], "messages[0].role"),
                            ([{"role": "user", "content": 3}], "messages[0].content")):
        r = post(app, "/v1/chat/completions", {"model": "organism", "messages": messages})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_failure_leaves_no_steering_behind(app, organism):
    model, tok = organism
    # a text whose direction cannot be computed fails in the engine, not in validation:
    # the forward of the capture is broken on purpose for one text only
    ids = tok(PROMPTS[0])["input_ids"]
    plain = reference(model, tok, ids, [], 6)
    engine = app.state.autosteer.engine
    orig = engine.steer._text_directions

    def broken(text):
        if text == "explode":
            raise RuntimeError("capture failed")
        return orig(text)

    engine.steer._text_directions = broken
    try:
        async def go():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
                bad = {"model": "organism", "prompt": PROMPTS[0], "max_tokens": 6, "temperature": 0,
                       "steering": [{"layer_idx": 0, "coeff": 0.5, "text": "explode"}]}
                good = {"model": "organism", "prompt": PROMPTS[0], "max_tokens": 6, "temperature": 0}
                return await asyncio.gather(c.post("/v1/completions", json=bad), c.post("/v1/completions", json=good),
                                            c.post("/v1/completions", json=good))
        bad, good, good2 = asyncio.run(go())
    finally:
        engine.steer._text_directions = orig
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "steering"
    assert "capture failed" in bad.json()["error"]["message"]
    assert good.json()["choices"][0]["text"] == plain == good2.json()["choices"][0]["text"]
    assert _hooks(model) == 0


def test_body_limit_and_queue_limit(organism):
    from autosteer.serve import create_app

    model, tok = organism
    small = create_app(model, tok, model_name="organism", max_body=200, max_batch=1, max_waiting=1, max_tokens=8)
    try:
        r = post(small, "/v1/completions", {"model": "organism", "prompt": "x" * 500})
        assert r.status_code == 413 and "at most 200" in r.json()["error"]["message"]

        async def chunked():  # no Content-Length: counted while it arrives
            async def gen():
                for _ in range(10):
                    yield b" " * 50
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=small), base_url="http://test") as c:
                return await c.post("/v1/completions", content=gen())
        assert asyncio.run(chunked()).status_code == 413

        async def many():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=small), base_url="http://test") as c:
                body = {"model": "organism", "prompt": PROMPTS[0], "max_tokens": 8, "temperature": 0}
                return await asyncio.gather(*[c.post("/v1/completions", json=body) for _ in range(6)])
        codes = sorted(r.status_code for r in asyncio.run(many()))
        assert 429 in codes and 200 in codes, codes
        assert set(codes) == {200, 429}
    finally:
        assert small.state.close(timeout=30)


def test_api_key(organism):
    from autosteer.serve import create_app

    model, tok = organism
    keyed = create_app(model, tok, model_name="organism", api_key="sekrit")
    try:
        body = {"model": "organism", "prompt": PROMPTS[0], "max_tokens": 2, "temperature": 0}
        assert post(keyed, "/v1/completions", body).status_code == 401
        assert post(keyed, "/v1/completions", body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert post(keyed, "/v1/completions", body, headers={"Authorization": "Bearer sekrit"}).status_code == 200
    finally:
        assert keyed.state.close(timeout=30)


def test_include_router_adds_routes(organism):
    from autosteer.serve import create_app

    model, tok = organism
    app = create_app(model, tok, model_name="organism")
    router = APIRouter()

    @router.get("/playground/info")
    async def info(request: Request):
        return {"model": request.app.state.autosteer.name}

    app.include_router(router)

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return (await c.get("/playground/info")).json()
    try:
        assert asyncio.run(go()) == {"model": "organism"}
    finally:
        assert app.state.close(timeout=30)


# ------------------------------------------------------------------ a real server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(organism, preset_files, tmp_path_factory):
    """``autosteer serve`` in a subprocess on 127.0.0.1 (the CLI as a user runs it), on a model
    folder: the organism saved with a chat template."""
    model, tok = organism
    folder = tmp_path_factory.mktemp("organism-chat")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    log = tmp_path_factory.mktemp("serve") / "server.log"
    fh = open(log, "w")  # noqa: SIM115 - open while the server runs, closed at teardown
    proc = subprocess.Popen([sys.executable, "-m", "autosteer", "serve", "--model", str(folder), "--name", "organism", "--port", str(port),
                             "--preset", f"careful={preset_files['careful']}",
                             "--preset", f"precise={preset_files['precise']}", "--max-batch", "4",
                             "--max-tokens", "4000", "--threads", "1"],
                            stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
        assert proc.poll() is None, log.read_text()
    else:
        proc.kill()
        pytest.fail("server did not start: " + log.read_text())
    yield base, proc, log
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    fh.close()


def test_openai_client_over_uvicorn(server, organism):
    openai = pytest.importorskip("openai")
    base, _, _ = server
    with openai.OpenAI(base_url=base + "/v1", api_key="unused") as client:
        _openai_checks(openai, client, organism)


def _openai_checks(openai, client, organism):
    model, tok = organism
    assert [m.id for m in client.models.list()] == ["organism", "organism+careful", "organism+precise"]
    st = [{"layer_idx": 0, "coeff": 0.5, "text": "logical"}]
    r = client.completions.create(model="organism", prompt=PROMPTS[0], max_tokens=6, temperature=0,
                                  extra_body={"steering": st})
    ids = tok(PROMPTS[0])["input_ids"]
    assert r.choices[0].text == reference(model, tok, ids, st, 6)
    chat = client.chat.completions.create(model="organism+careful", messages=[{"role": "user", "content": PROMPTS[1]}],
                                          max_tokens=5, temperature=0, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in chat if c.choices)
    cids = tok(tok.apply_chat_template([{"role": "user", "content": PROMPTS[1]}], add_generation_prompt=True,
                                       tokenize=False), add_special_tokens=False)["input_ids"]
    assert text == reference(model, tok, cids, [{"layer_idx": 1, "coeff": 0.5, "concept": CONCEPT}], 5)
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="organism", prompt="hi", extra_body={"steering": [{"layer_idx": 99,
                                                                                         "coeff": 1, "text": "a"}]})
    assert "layer_idx" in str(info.value)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="hi")


def test_413_answered_before_the_upload_ends(server):
    base, _, _ = server
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 50000000\r\n\r\n" + b" " * 1000)
        reply = s.recv(4096).decode()  # 1 KB of 50 MB sent: the answer comes anyway
    assert reply.startswith("HTTP/1.1 413"), reply


def test_disconnect_mid_stream_frees_the_row(server):
    base, _, _ = server
    # this steering makes the organism repeat a word, never its end token: 4000 tokens unless cancelled
    body = {"model": "organism", "prompt": PROMPTS[0], "max_tokens": 4000, "temperature": 0, "stream": True,
            "steering": [{"layer_idx": 5, "coeff": 2.0, "text": "what"}]}
    before = httpx.get(base + "/health").json()["cancelled"]
    with httpx.Client(timeout=30) as c, c.stream("POST", base + "/v1/completions", json=body) as r:
        for _ in r.iter_lines():
            break  # one chunk, then hang up
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if httpx.get(base + "/health").json()["busy"] == 0:
            break
        time.sleep(0.1)
    health = httpx.get(base + "/health").json()
    assert health["busy"] == 0 and health["cancelled"] == before + 1


def test_compare_presets_script(server, organism, preset_files):
    base, _, _ = server
    model, tok = organism
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_presets.py"), "careful", "precise",
                          "--completions", "--json", "--max-tokens", "6", "--base-url", base + "/v1",
                          "--prompt", PROMPTS[2]], capture_output=True, text=True, timeout=120, check=True)
    answers = json.loads(out.stdout)["answers"]
    ids = tok(PROMPTS[2])["input_ids"]
    assert answers["unsteered"] == reference(model, tok, ids, [], 6)
    assert answers["careful"] == reference(model, tok, ids, [{"layer_idx": 1, "coeff": 0.5, "concept": CONCEPT}], 6)
    steer = Steer.load(model, tok, preset_files["precise"])  # the vector file, as Steer reads it
    try:
        with torch.inference_mode():
            gen = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=6, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
    finally:
        steer.reset_all()
    assert answers["precise"] == tok.decode(gen[0, len(ids):], skip_special_tokens=True)


def test_ctrl_c_drains_then_exits(server):
    base, proc, log = server
    body = {"model": "organism", "prompt": PROMPTS[0], "max_tokens": 6, "temperature": 0, "stream": True}
    with httpx.Client(timeout=30) as c, c.stream("POST", base + "/v1/completions", json=body) as r:
        proc.send_signal(signal.SIGINT)
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert proc.wait(timeout=60) == 0, log.read_text()


def test_gguf_preset_is_llamacpp_semantics_per_row(organism, tmp_path):
    """A .gguf preset adds its fixed vectors to layer outputs, as Steer.load of the file does,
    on its own rows only."""
    pytest.importorskip("gguf")
    from autosteer.serve import create_app

    model, tok = organism
    path = tmp_path / "cv.gguf"
    with Steer(model, tok) as s:
        s.add(3, 2.0, text="what")
        s.add(5, 1.0, text="logical")
        s.save(path)
    ids = tok(PROMPTS[0])["input_ids"]
    steer = Steer.load(model, tok, path)
    try:
        with torch.inference_mode():
            gen = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
    finally:
        steer.reset_all()
    expected = tok.decode(gen[0, len(ids):], skip_special_tokens=True)
    plain = reference(model, tok, ids, [], 8)
    assert expected != plain
    app = create_app(model, tok, presets={"cv": path}, model_name="organism", max_tokens=8)
    try:
        async def go():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
                body = {"model": "organism", "prompt": PROMPTS[0], "max_tokens": 8, "temperature": 0}
                return await asyncio.gather(c.post("/v1/completions", json={**body, "steering": "cv"}),
                                            c.post("/v1/completions", json=body))
        steered, unsteered = asyncio.run(go())
        assert steered.json()["choices"][0]["text"] == expected
        assert unsteered.json()["choices"][0]["text"] == plain
    finally:
        assert app.state.close(timeout=30)


def test_a_pasted_best_json_with_its_concepts(app, organism):
    model, tok = organism
    other = Concept("tidy", positive=["a precise answer :"], negative=["an answer :"])
    best = SteerCandidate.from_dict([{"layer_idx": 2, "coeff": 0.7, "text": other}]).to_dict(full=True)
    body = {"model": "organism", "prompt": PROMPTS[1], "max_tokens": 6, "temperature": 0, "steering": best}
    r = post(app, "/v1/completions", body)
    assert r.status_code == 200, r.text
    ids = tok(PROMPTS[1])["input_ids"]
    assert r.json()["choices"][0]["text"] == reference(model, tok, ids, [{"layer_idx": 2, "coeff": 0.7,
                                                                          "concept": other}], 6)
    bad = post(app, "/v1/completions", {**body, "steering": {"vectors": best["vectors"], "concepts": {"x": 3}}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "steering.concepts"


@pytest.mark.parametrize("argv,words", [
    (["--preset", "x"], "expected NAME=FILE"),
    (["--preset", "x=/no/such/file.json"], "no such file"),
    (["--port", "70000"], "--port must be 0..65535"),
])
def test_cli_refuses_bad_options_before_loading(argv, words, capsys):
    from autosteer import cli

    assert cli.main(["serve", "--model", "organism", *argv]) == cli.EXIT_BAD_INPUT
    assert words in capsys.readouterr().err


def test_a_preset_found_with_a_system_prompt_warns_that_the_server_steers_only(organism, tmp_path):
    """A best.json from a search with system prompts: the server loads its vectors and says that
    the system message is the client's to send; a system prompt alone is no preset."""
    from autosteer.serve.steering import load_preset

    model, tok = organism
    both = SteerCandidate(SteerCandidate.from_dict([{"layer_idx": 1, "coeff": 0.5, "text": CONCEPT}]).vectors,
                          "be careful")
    (tmp_path / "both.json").write_text(json.dumps(both.to_dict(full=True)))
    with pytest.warns(UserWarning, match="send that system message in the requests' messages"):
        preset = load_preset("both", tmp_path / "both.json", model, tok)
    assert [(v.layer_idx, v.coeff) for v in preset.steering.vectors] == [(1, 0.5)]
    (tmp_path / "alone.json").write_text(json.dumps(SteerCandidate((), "be careful").to_dict()))
    with pytest.warns(UserWarning), pytest.raises(InvalidArgumentError, match="a system prompt alone, no vectors"):
        load_preset("alone", tmp_path / "alone.json", model, tok)
    user = SteerCandidate(both.vectors, "be careful", "user")  # the prompt goes after the request's text
    (tmp_path / "user.json").write_text(json.dumps(user.to_dict(full=True)))
    with pytest.warns(UserWarning, match=r"add that text after each request's text \(the user's turn\)"):
        assert load_preset("user", tmp_path / "user.json", model, tok).steering.vectors == preset.steering.vectors
