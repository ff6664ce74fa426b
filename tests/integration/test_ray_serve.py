"""The server on Ray Serve: two replicas on a private local Ray instance behind Ray's HTTP
proxy on 127.0.0.1; greedy answers (plain and streamed) equal the in-process reference and
both replicas answer."""

from __future__ import annotations

import json
import logging
import os
import socket

import pytest
import torch

ray = pytest.importorskip("ray", reason="needs the ray extra")
serve = pytest.importorskip("ray.serve", reason="needs ray[serve]")
httpx = pytest.importorskip("httpx")

from ray_cluster import short_temp_dir

from autosteer import Steer
from autosteer.organism import load_organism

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_serve():
    saved = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.pop("RAY_ADDRESS", None)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 ** 2,
             _temp_dir=short_temp_dir("rs"), log_to_driver=False, logging_level=logging.WARNING)
    port = _free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        from autosteer.serve.ray_serve import deployment

        serve.run(deployment("organism", num_replicas=2, ray_actor_options={"num_cpus": 0.5}, threads=1,
                             max_batch=4, max_tokens=16), route_prefix="/", name="autosteer")
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _reference(model, tok, prompt, vectors, n):
    ids = tok(prompt)["input_ids"]
    with Steer(model, tok) as s:
        for layer, coeff, text in vectors:
            s.add(layer, coeff, text=text)
        with torch.inference_mode():
            out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, len(ids):], skip_special_tokens=True)


def test_replicas_answer_like_the_model_in_process(ray_serve):
    model, tok = load_organism()
    prompts = ["what is 3 plus 4 ?", "what is 12 plus 5 ?", "what is 7 plus 8 ?", "what is 1 plus 19 ?"]
    configs = [[], [(0, 0.5, "logical")], [(2, 0.8, "confused")], [(5, 2.0, "what")]]
    with httpx.Client(base_url=ray_serve, timeout=120) as c:
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["organism"]
        for prompt, cfg in zip(prompts, configs):
            body = {"model": "organism", "prompt": prompt, "max_tokens": 6, "temperature": 0}
            if cfg:
                body["steering"] = [{"layer_idx": la, "coeff": co, "text": t} for la, co, t in cfg]
            r = c.post("/v1/completions", json=body)
            assert r.status_code == 200, r.text
            expected = _reference(model, tok, prompt, cfg, 6)
            assert r.json()["choices"][0]["text"] == expected
            with c.stream("POST", "/v1/completions", json={**body, "stream": True}) as s:
                lines = [line for line in s.iter_lines() if line]
            assert lines[-1] == "data: [DONE]"
            assert "".join(json.loads(line[6:])["choices"][0]["text"] for line in lines[:-1]) == expected
        bad = c.post("/v1/completions", json={"model": "organism", "prompt": "x",
                                               "steering": [{"layer_idx": 99, "coeff": 1, "text": "a"}]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "steering[0].layer_idx"
        pids = {c.get("/health").json()["pid"] for _ in range(40)}
    assert len(pids) == 2  # both replicas served
