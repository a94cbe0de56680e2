"""deploy/proxy.py's body limit as an ASGI middleware: refusals from the headers alone, in the
service's error format, without reading the body or calling the application."""

import asyncio
import json

import pytest

from deploy.proxy import LIMIT_VARIABLE, BodyLimit, middlewares


def _call(headers: dict[str, str], limit: int = 1000):
    """Run a request with `headers` through BodyLimit; (messages sent, whether the app ran, body reads)."""
    sent, state = [], {"app": False, "reads": 0}

    async def app(scope, receive, send):
        state["app"] = True
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def receive():
        state["reads"] += 1
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(BodyLimit(app, limit)(scope, receive, send))
    return sent, state["app"], state["reads"]


def test_a_declared_body_over_the_limit_is_refused_413_unread():
    sent, app_ran, reads = _call({"content-length": "1001"})
    assert sent[0]["status"] == 413 and not app_ran and reads == 0
    detail = json.loads(sent[1]["body"])["detail"][0]
    assert detail["loc"] == ["body"] and "1001 bytes, over the proxy's limit of 1000" in detail["msg"]
    assert (b"connection", b"close") in sent[0]["headers"]


def test_a_chunked_body_without_length_is_refused_411_and_a_bad_length_400():
    sent, app_ran, _ = _call({"transfer-encoding": "chunked"})
    assert sent[0]["status"] == 411 and not app_ran
    assert json.loads(sent[1]["body"])["detail"][0]["loc"] == ["header", "content-length"]
    sent, app_ran, _ = _call({"content-length": "12abc"})
    assert sent[0]["status"] == 400 and not app_ran


@pytest.mark.parametrize("headers", [{"content-length": "1000"}, {}, {"content-length": "0"}])
def test_bodies_within_the_limit_and_requests_without_a_body_pass(headers):
    sent, app_ran, _ = _call(headers)
    assert app_ran and sent[0]["status"] == 200


def test_the_limit_comes_from_the_environment_and_a_bad_value_is_refused(monkeypatch):
    monkeypatch.setenv(LIMIT_VARIABLE, "4096")
    assert middlewares()[0].kwargs == {"limit": 4096}
    monkeypatch.setenv(LIMIT_VARIABLE, "lots")
    with pytest.raises(ValueError, match="TCA_PROXY_MAX_BODY_BYTES='lots'"):
        middlewares()
