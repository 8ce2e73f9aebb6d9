"""What a provider's error body may put into our error message: its `error.message`, cleaned
and cut, and nothing else (providers.py, against the scripted fake server, no database).

The `openai` and `tenacity` packages come from the build's dependency folder
(build/pylib/deps, what the extension runs with); without them these tests are skipped.
tests/test_providers.py::test_an_error_body_is_cut_to_the_providers_message checks the
same through SQL, against the extension as installed in the image.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

DEPS = Path(__file__).resolve().parents[2] / "build" / "pylib" / "deps"
if DEPS.is_dir() and str(DEPS) not in sys.path:
    sys.path.append(str(DEPS))  # after the venv's own packages
pytest.importorskip("openai", reason=f"openai not installed (looked in {DEPS})")
pytest.importorskip("tenacity", reason=f"tenacity not installed (looked in {DEPS})")

from ragpg import providers  # noqa: E402
from ragpg.errors import RagError  # noqa: E402

SECRET = "sk-test-0123456789abcdef0123456789abcdef"
HTML = ("<!doctype html><html><head><title>400 Bad Request</title></head><body>"
        "<h1>Bad Request</h1><pre>Traceback (most recent call last):\n  File \"/srv/internal/app.py\"\n"
        "psycopg.errors.UndefinedTable: relation \"billing.accounts\" does not exist\n"
        "DATABASE_URL=postgres://svc:hunter2@10.0.0.5/billing</pre>" + "<p>padding</p>" * 400 + "</body></html>")
LONG = "Invalid 'input[0]': the text is too long for this model, " + "really " * 60 + "long."
JSON_ERROR = json.dumps({
    "error": {"message": LONG + "\x1b[2J\r\nX-Injected: yes\u202e", "type": "invalid_request_error",
              "param": "input", "code": "context_length_exceeded",
              "internal": {"upstream": "http://10.0.0.5:8080/embed", "trace_id": "t-4242"}},
    "request": {"model": "m", "input": ["hello"]}, "debug": "worker=gpu-07"})
# scenario -> (status, content type, body): answered instead of the fake's script
BODIES = {
    "html": (400, "text/html", HTML),
    "html502": (502, "text/html", HTML),
    "extra": (400, "application/json", JSON_ERROR),
    "toplevel": (400, "application/json", json.dumps({"message": "internal service says: table billing.accounts",
                                                       "detail": "see /srv/internal"})),
    # a message that quotes our key past the 200th character: masked before it is cut
    "quote": (401, "application/json", json.dumps({"error": {"message": "x" * 190 + " key " + SECRET}})),
}
LEAKS = ("Traceback", "billing", "hunter2", "10.0.0.5", "<", "padding", "invalid_request_error",
         "context_length", "t-4242", "worker", "gpu-07", "hello", "\x1b", "\n", "\r", "\u202e", "X-Injected")


@pytest.fixture(scope="module")
def fake():
    """tests/openai_fake.py, answering the BODIES scenarios with those bodies."""
    from openai_fake import FakeOpenAI

    fake = FakeOpenAI()
    scripted = fake.httpd.RequestHandlerClass

    class WithBodies(scripted):
        def do_POST(self):
            name = self.path.strip("/").split("/")[0]
            if name not in BODIES:
                return super().do_POST()
            self.rfile.read(int(self.headers.get("content-length") or 0))
            status, content_type, body = BODIES[name]
            data = body.encode()
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("set-cookie", "session=internal-cookie")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    fake.httpd.RequestHandlerClass = WithBodies
    yield fake
    fake.close()


def spec(base_url: str) -> providers.ModelSpec:
    return providers.ModelSpec(name="m", kind="embed", provider="openai", provider_model=None, base_url=base_url,
                               dimensions=3, max_input_tokens=1000, price_input_per_1m=0, price_output_per_1m=0,
                               api_key=None, tokenizer=None)


def embed_error(base_url: str, secret: str | None = None) -> RagError:
    with pytest.raises(RagError) as e:
        providers.embed(spec(base_url), providers.CallPolicy(max_retries=1, retry_base=0.01), secret, ["hello"])
    return e.value


def url(fake, scenario: str) -> str:
    return f"http://127.0.0.1:{fake.port}/{scenario}/v1"


def test_an_html_error_page_becomes_a_fixed_phrase(fake):
    e = embed_error(url(fake, "html"))
    assert e.message == f"rag: model 'm' at {url(fake, 'html')}: HTTP 400: no error message"
    assert e.sqlstate == "22023"
    e = embed_error(url(fake, "html502"))  # retried, then the same phrase
    assert e.message == f"rag: model 'm' at {url(fake, 'html502')}: HTTP 502: no error message (after 2 attempts)"
    assert e.sqlstate == "58000"


def test_a_json_error_keeps_only_its_message_cleaned_and_cut(fake):
    e = embed_error(url(fake, "extra"))
    prefix = f"rag: model 'm' at {url(fake, 'extra')}: HTTP 400: "
    assert e.message.startswith(prefix + "Invalid 'input[0]': the text is too long for this model, really really")
    message = e.message[len(prefix):]
    assert len(message) == 200 and message.endswith("…")
    for leak in LEAKS + ("set-cookie", "internal-cookie", "Set-Cookie"):
        assert leak not in e.message, leak
    assert e.hint is None or all(leak not in e.hint for leak in LEAKS)


def test_other_json_is_not_a_message(fake):
    e = embed_error(url(fake, "toplevel"))
    assert e.message.endswith("HTTP 400: no error message") and "internal" not in e.message


def test_the_key_is_masked_before_the_message_is_cut(fake):
    e = embed_error(url(fake, "quote"), secret=SECRET)
    assert e.sqlstate == "28000"
    assert SECRET[:8] not in e.message and "***" in e.message


def test_credentials_and_query_of_the_url_are_not_shown(fake):
    e = embed_error(f"http://svc:hunter2@127.0.0.1:{fake.port}/extra/v1?api-key=abc123#frag")
    assert e.message.startswith(f"rag: model 'm' at http://127.0.0.1:{fake.port}/extra/v1: HTTP 400: Invalid")
    assert "hunter2" not in e.message and "abc123" not in e.message and "frag" not in e.message


def test_chat_and_its_stream_say_the_same(fake):
    s, policy = spec(url(fake, "extra")), providers.CallPolicy(max_retries=0)
    messages = [{"role": "user", "content": "hello"}]
    for call in (lambda: providers.chat(s, policy, None, messages, 10, 0.1),
                 lambda: providers.ChatStream(s, policy, None, messages, 10, 0.1)):
        with pytest.raises(RagError) as e:
            call()
        message = e.value.message.split("HTTP 400: ", 1)[1]
        assert message.startswith("Invalid 'input[0]'") and len(message) == 200
        assert all(leak not in message for leak in LEAKS)
