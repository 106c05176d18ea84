"""ddrepro.llm against a real HTTP server on the loopback interface (no network, no LLM weights on this machine) and a
tiny random GPT-2 saved to a temp folder."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ddrepro.core import AssetError, ConfigError, DataError, file_sha256, read_json
from ddrepro.llm import (ChatClient, LoopbackChatServer, OpenAIChat, TINY_VOCAB, TransformersChat, cached_chat,
                         check_messages, echo_reply, make_client, save_tiny_chat_model)

HELLO = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "hello there"}]


@pytest.fixture
def server():
    "A LoopbackChatServer (ThreadingHTTPServer on 127.0.0.1, port 0) for one test; stopped within a bounded time."
    srv = LoopbackChatServer().start()
    yield srv
    t0 = time.perf_counter()
    srv.stop(timeout=5)
    assert time.perf_counter() - t0 < 6, "the loopback server took too long to stop"


@pytest.fixture
def client(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    c = OpenAIChat(server.base_url, "llama3", timeout=5)
    c.backoff = 0.01
    return c


def closed_port() -> int:
    "A loopback port nothing listens on."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ the loopback server
def test_server_speaks_chat_completions_to_plain_urllib(server):
    req = urllib.request.Request(f"{server.base_url}/chat/completions", method="POST",
                                 data=json.dumps({"model": "m", "messages": HELLO}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=5) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/json"
        d = json.loads(r.read())
    assert d["object"] == "chat.completion" and d["model"] == "m"
    assert d["choices"][0]["message"] == {"role": "assistant", "content": "echo: hello"}
    assert server.requests[-1]["path"] == "/v1/chat/completions" and server.requests[-1]["body"]["messages"] == HELLO
    req = urllib.request.Request(f"{server.base_url}/completions", method="POST", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=5)
    assert e.value.code == 404


def test_echo_reply_uses_the_last_user_message():
    msgs = [{"role": "user", "content": "first one"}, {"role": "assistant", "content": "x"},
            {"role": "user", "content": "  second one"}]
    assert echo_reply(msgs) == "echo: second"
    assert echo_reply([{"role": "system", "content": "s"}]) == "echo: "


def test_custom_reply_function():
    with LoopbackChatServer(reply=lambda msgs: "stripes\nsleeves") as srv:
        assert OpenAIChat(srv.base_url, "m").chat(HELLO) == "stripes\nsleeves"
    assert srv._server is None


# --------------------------------------------------------------------------------------------------- messages
@pytest.mark.parametrize("bad, part", [([], "non-empty list"), ("hello", "non-empty list"), (None, "non-empty list"),
                                       ({"role": "user", "content": "x"}, "non-empty list"),
                                       ([{"role": "robot", "content": "x"}], "messages[0]"),
                                       ([{"role": "user", "content": "x"}, {"role": "user"}], "messages[1]"),
                                       ([{"role": "user", "content": 3}], "'content': str")])
def test_check_messages_rejects(bad, part):
    with pytest.raises(ConfigError, match=part.replace("[", r"\[").replace("]", r"\]")):
        check_messages(bad)


def test_clients_are_chat_clients(server, tmp_path):
    assert isinstance(OpenAIChat(server.base_url, "m"), ChatClient)
    assert not isinstance(object(), ChatClient)


# ------------------------------------------------------------------------------------------------- OpenAIChat
def test_chat_sends_model_messages_and_gen(client, server):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "stripes or dots?"}]
    assert client.chat(msgs) == "echo: stripes"
    r = server.requests[-1]
    assert r["method"] == "POST" and r["path"] == "/v1/chat/completions"
    assert r["headers"]["Content-Type"] == "application/json" and "Authorization" not in r["headers"]
    assert r["body"] == {"model": "llama3", "messages": msgs, "temperature": 0.0, "max_tokens": 1024}
    client.chat(msgs, temperature=0.7, max_tokens=5, seed=1)
    assert server.requests[-1]["body"] == {"model": "llama3", "messages": msgs, "temperature": 0.7, "max_tokens": 5, "seed": 1}
    assert client.last_info["finish_reason"] == "stop" and client.last_info["response_model"] == "llama3"
    assert client.model_id == f"llama3@{server.base_url}" and client.url == f"{server.base_url}/chat/completions"


def test_api_key_argument_and_env_go_only_to_the_header(server, monkeypatch, tmp_path):
    OpenAIChat(server.base_url, "m", api_key="sk-arg").chat(HELLO)
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-arg"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-secret")
    c = OpenAIChat(server.base_url, "m")
    rec = cached_chat(tmp_path / "r.json", c, HELLO)
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-env-secret"
    assert "sk-env-secret" not in (tmp_path / "r.json").read_text() + repr(c) + c.model_id + json.dumps(rec)
    assert "sk-arg" not in repr(OpenAIChat(server.base_url, "m", api_key="sk-arg"))


def test_500_once_then_200_is_retried(client, server):
    server.queue(500, "overloaded")
    n0 = len(server.requests)
    assert client.chat(HELLO) == "echo: hello"
    assert len(server.requests) - n0 == 2


def test_429_honours_a_short_retry_after(client, server):
    server.queue(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "0"})
    assert client.chat(HELLO) == "echo: hello"


def test_5xx_retries_are_bounded(client, server):
    for _ in range(5): server.queue(502, "bad gateway")
    n0 = len(server.requests)
    with pytest.raises(AssetError, match="HTTP 502.*after 3 attempts.*bad gateway"):
        client.chat(HELLO)
    assert len(server.requests) - n0 == 3            # retries=2
    server._queue.clear()
    c0 = OpenAIChat(server.base_url, "m", retries=0)
    server.queue(503)
    with pytest.raises(AssetError, match="HTTP 503"):
        c0.chat(HELLO)


def test_401_is_not_retried_and_names_status_url_model_and_body(client, server):
    body = json.dumps({"error": {"message": "Incorrect API key provided", "pad": "x" * 1000}})
    server.queue(401, body)
    n0 = len(server.requests)
    with pytest.raises(AssetError) as e:
        client.chat(HELLO)
    msg = str(e.value)
    assert len(server.requests) - n0 == 1
    assert "HTTP 401" in msg and client.url in msg and "'llama3'" in msg and "OPENAI_API_KEY" in msg
    assert body[:300] in msg and body[:301] not in msg


def test_400_is_not_retried(client, server):
    server.queue(400, {"error": {"message": "max_tokens too large"}})
    n0 = len(server.requests)
    with pytest.raises(AssetError, match="HTTP 400.*max_tokens too large"):
        client.chat(HELLO)
    assert len(server.requests) - n0 == 1


@pytest.mark.parametrize("body, part", [("this is not json", "not JSON"),
                                        ("{\"choices\": []}", "not a chat-completions response"),
                                        ({"choices": [{"message": {"role": "assistant", "content": None}}]}, "not a chat-completions"),
                                        ({"object": "list", "data": []}, "not a chat-completions response")])
def test_a_malformed_reply_is_a_clear_error(client, server, body, part):
    server.queue(200, body)
    with pytest.raises(AssetError, match=part) as e:
        client.chat(HELLO)
    assert client.url in str(e.value) and "'choices'" in str(e.value)


def test_connection_refused_is_fast_and_says_offline():
    port = closed_port()
    c = OpenAIChat(f"http://127.0.0.1:{port}/v1", "llama3", timeout=5)
    t0 = time.perf_counter()
    with pytest.raises(AssetError) as e:
        c.chat(HELLO)
    assert time.perf_counter() - t0 < 2
    msg = str(e.value)
    assert f"http://127.0.0.1:{port}/v1/chat/completions" in msg and "'llama3'" in msg
    assert "offline" in msg and "base_url=" in msg and "Connection refused" in msg


def test_a_slow_server_is_a_timeout_error(client, server):
    c = OpenAIChat(server.base_url, "llama3", timeout=0.3)
    server.queue(200, None, delay=1.5)
    t0 = time.perf_counter()
    with pytest.raises(AssetError, match=r"no reply within timeout=0\.3 s.*timeout="):
        c.chat(HELLO)
    assert time.perf_counter() - t0 < 1.3


@pytest.mark.parametrize("kw, part", [(dict(base_url="127.0.0.1:8000/v1"), "http:// or https://"),
                                      (dict(model=" "), "model="), (dict(timeout=0), "timeout="),
                                      (dict(retries=-1), "retries="), (dict(max_tokens=0), "max_tokens="),
                                      (dict(temperature=-1), "temperature=")])
def test_openai_chat_checks_its_arguments(kw, part):
    args = dict(base_url="http://127.0.0.1:8000/v1", model="m") | kw
    with pytest.raises(ConfigError, match=part):
        OpenAIChat(**args)


def test_gen_may_not_override_model_or_stream(client):
    for gen in ({"model": "x"}, {"stream": True}):
        with pytest.raises(ConfigError, match="may not set"):
            client.chat(HELLO, **gen)
    with pytest.raises(ConfigError, match="not JSON-serialisable"):
        client.chat(HELLO, stop=object())


def test_loopback_base_url_ignores_proxy_settings(server, monkeypatch):
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.delenv("no_proxy", raising=False); monkeypatch.delenv("NO_PROXY", raising=False)
    assert OpenAIChat(server.base_url, "m").chat(HELLO) == "echo: hello"


# ------------------------------------------------------------------------------------------------ make_client
def test_make_client_openai_specs(server):
    c = make_client(f"openai:llama3:8b@{server.base_url}", api_key="k", timeout=3)
    assert isinstance(c, OpenAIChat) and (c.model, c.base_url, c.timeout) == ("llama3:8b", server.base_url, 3.0)
    assert c.chat(HELLO) == "echo: hello"
    c = make_client("openai:gpt-4o@https://api.openai.com/v1")
    assert c.model_id == "gpt-4o@https://api.openai.com/v1"
    assert make_client("openai:org/name@v2@http://h:1/v1/").model_id == "org/name@v2@http://h:1/v1"


def test_make_client_transformers_spec(tmp_path):
    with pytest.raises(AssetError, match=str(tmp_path / "nope")):
        make_client(f"transformers:{tmp_path / 'nope'}")


@pytest.mark.parametrize("spec", ["gpt-4o", "openai:gpt-4o", "openai:@https://h/v1", "openai:m@ftp://h/v1",
                                  "openai:m@", "transformers:", "transformers:  ", "hf:gpt2", "", None, 3])
def test_make_client_rejects_other_specs(spec):
    with pytest.raises(ConfigError) as e:
        make_client(spec)
    msg = str(e.value)
    assert repr(spec) in msg and "openai:<model>@<base_url>" in msg and "transformers:<folder>" in msg


# ------------------------------------------------------------------------------------------------ cached_chat
def test_cached_chat_asks_once_and_again_when_the_question_changes(client, server, tmp_path):
    p = tmp_path / "sub" / "bag.json"
    n0 = len(server.requests)
    a = cached_chat(p, client, HELLO, key={"class": "bag"}, max_tokens=8)
    b = cached_chat(p, client, tuple(HELLO), key={"class": "bag"}, max_tokens=8)       # a tuple is the same question
    assert len(server.requests) - n0 == 1 and a == b == read_json(p)
    assert list(a) == ["model", "date", "messages", "gen", "key", "reply", "provenance"]
    assert a["model"] == client.model_id and a["messages"] == HELLO and a["gen"] == {"max_tokens": 8}
    assert a["key"] == {"class": "bag"} and a["reply"] == "echo: hello" and a["date"].endswith("+00:00")
    assert a["provenance"]["client"] == "OpenAIChat" and a["provenance"]["base_url"] == server.base_url
    assert a["provenance"]["response"]["finish_reason"] == "stop"
    cached_chat(p, client, HELLO, key={"class": "shirt"}, max_tokens=8)                 # another key
    assert len(server.requests) - n0 == 2
    msgs = HELLO[:1] + [{"role": "user", "content": "goodbye"}]
    assert cached_chat(p, client, msgs, key={"class": "shirt"}, max_tokens=8)["reply"] == "echo: goodbye"
    assert len(server.requests) - n0 == 3                                               # other messages
    cached_chat(p, client, msgs, key={"class": "shirt"}, max_tokens=9)                  # other gen
    assert len(server.requests) - n0 == 4
    cached_chat(p, OpenAIChat(server.base_url, "other"), msgs, key={"class": "shirt"}, max_tokens=9)   # other model
    assert len(server.requests) - n0 == 5
    cached_chat(p, OpenAIChat(server.base_url, "other"), msgs, key={"class": "shirt"}, max_tokens=9)
    assert len(server.requests) - n0 == 5
    cached_chat(p, OpenAIChat(server.base_url, "other"), msgs, key={"class": "shirt"}, refresh=True, max_tokens=9)
    assert len(server.requests) - n0 == 6


def test_a_failed_call_leaves_the_cache_file_untouched(client, server, tmp_path):
    p = tmp_path / "r.json"
    cached_chat(p, client, HELLO)
    before = p.read_bytes()
    server.queue(401, "denied")
    with pytest.raises(AssetError, match="HTTP 401"):
        cached_chat(p, client, HELLO, refresh=True)
    server.queue(200, "not json")
    with pytest.raises(AssetError, match="not JSON"):
        cached_chat(p, client, HELLO, key={"k": 1})

    class Interrupted:
        model_id = "interrupted"
        def chat(self, messages, **gen): raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        cached_chat(p, Interrupted(), HELLO)
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["r.json"]                     # no temp file left behind
    with pytest.raises(AssetError, match="cannot connect"):
        cached_chat(tmp_path / "new.json", OpenAIChat(f"http://127.0.0.1:{closed_port()}/v1", "m"), HELLO)
    assert not (tmp_path / "new.json").exists()


def test_cached_chat_refuses_files_that_are_not_its_caches(client, tmp_path):
    (tmp_path / "record.json").write_text('{"status": "complete"}')
    with pytest.raises(DataError, match="not a reply cache"):
        cached_chat(tmp_path / "record.json", client, HELLO)
    assert (tmp_path / "record.json").read_text() == '{"status": "complete"}'
    (tmp_path / "half.json").write_text('{"model": "m", "mess')
    with pytest.raises(DataError, match="not valid JSON"):
        cached_chat(tmp_path / "half.json", client, HELLO)


def test_cached_chat_checks_client_reply_and_arguments(tmp_path):
    class NotText:
        model_id = "not-text"
        def chat(self, messages, **gen): return {"text": "x"}
    with pytest.raises(AssetError, match="expected the reply text"):
        cached_chat(tmp_path / "a.json", NotText(), HELLO)
    with pytest.raises(ConfigError, match="expected a ChatClient"):
        cached_chat(tmp_path / "a.json", object(), HELLO)
    with pytest.raises(ConfigError, match="key="):
        cached_chat(tmp_path / "a.json", NotText(), HELLO, key={"x": object()})
    with pytest.raises(ConfigError, match="messages"):
        cached_chat(tmp_path / "a.json", NotText(), [{"role": "user"}])
    assert not (tmp_path / "a.json").exists()


def test_cached_chat_with_any_chat_client(tmp_path):
    calls = []
    class Fake:
        model_id = "fake-1"
        def chat(self, messages, **gen):
            calls.append((messages, gen)); return "ok"
    r = cached_chat(tmp_path / "f.json", Fake(), HELLO, seed=0)
    assert r["reply"] == "ok" and r["provenance"]["client"] == "Fake" and calls == [(HELLO, {"seed": 0})]
    assert cached_chat(tmp_path / "f.json", Fake(), HELLO, seed=0) == r and len(calls) == 1


# ------------------------------------------------------------------------------------------- TransformersChat
def test_transformers_chat_missing_folder_fails_before_importing_transformers(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "weights.bin").write_bytes(b"")
    code = ("import sys\nfrom ddrepro.llm import TransformersChat\nfrom ddrepro.core import AssetError\n"
            f"for p in [{str(tmp_path / 'missing')!r}, {str(tmp_path / 'empty')!r}]:\n"
            "    try: TransformersChat(p)\n"
            "    except AssetError as e: print(e)\n"
            "print('transformers' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert str(tmp_path / "missing") in lines[0] and "no such folder" in lines[0]
    assert str(tmp_path / "empty") in lines[1] and "no config.json" in lines[1] and "weights.bin" in lines[1]
    assert lines[2] == "False"


def test_transformers_chat_checks_its_arguments(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="max_new_tokens="):
        TransformersChat(tmp_path, max_new_tokens=0)
    with pytest.raises(ConfigError, match="temperature="):
        TransformersChat(tmp_path, temperature=-0.5)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(AssetError, match="not valid JSON"):
        TransformersChat(tmp_path)


def test_transformers_chat_model_id_without_cheap_weights(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"_name_or_path": "org/chat-7b"}')
    assert TransformersChat(tmp_path / "m").model_id == "m@org/chat-7b"
    (tmp_path / "m" / "config.json").write_text("{}")
    assert TransformersChat(tmp_path / "m").model_id == "m"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_chat_model(tmp_path_factory.mktemp("llm") / "tiny-chat")


def test_tiny_transformers_chat_round_trip(tiny_model, tmp_path):
    c = make_client(f"transformers:{tiny_model}", max_new_tokens=5, device="cpu")
    assert isinstance(c, TransformersChat) and isinstance(c, ChatClient)
    assert c.model_id == f"tiny-chat@sha256:{file_sha256(tiny_model / 'model.safetensors')}"
    assert c._model is None                                   # weights load on the first chat, not before
    rec = cached_chat(tmp_path / "tiny.json", c, HELLO)
    reply = rec["reply"]
    assert isinstance(reply, str) and set(reply.split()) <= set(TINY_VOCAB) | {"<unk>"}
    assert rec["provenance"]["client"] == "TransformersChat" and rec["provenance"]["path"] == str(tiny_model)
    assert rec["provenance"]["response"]["completion_tokens"] == 5 and rec["provenance"]["device"] == "cpu"
    assert c.chat(HELLO) == reply                              # greedy: deterministic
    c.chat(HELLO, max_tokens=2)                                # the OpenAI name works too
    assert c.last_info["completion_tokens"] == 2
    a = c.chat(HELLO, temperature=1.0, seed=3, max_new_tokens=4)
    assert c.chat(HELLO, temperature=1.0, seed=3, max_new_tokens=4) == a       # seeded sampling repeats


def test_tiny_model_without_chat_template_is_an_asset_error(tiny_model, tmp_path):
    import shutil
    base = tmp_path / "base-model"
    shutil.copytree(tiny_model, base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((base / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(AssetError, match="no chat template"):
        TransformersChat(base, device="cpu").chat(HELLO)
