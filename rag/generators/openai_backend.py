"""Any OpenAI-compatible `/v1/chat/completions` server (vLLM, TGI, llama.cpp server) over HTTP.

This is how generation scales past one machine: the service stays a thin client and the server does the
batching. Errors come back as GeneratorError carrying the server's own message; the generation policy above
(rag.generators.slots, rag.answering) turns them, and timeouts, into the extractive answer with the reason.
A connection error (refused, reset, the server went away) is retried once: a restarted or rescheduled server
replica is common in a deployment. A stream is retried only before its first token, never after (the caller
already has part of the text); a stream cut later is a GeneratorError.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx

from rag.config import GeneratorSettings
from rag.generators.slots import GeneratorError, GeneratorTimeout

RETRIES = 1  # extra attempts after a connection error
# Connection errors: the request never reached a server, or the server went away. Timeouts are not retried (the
# generation's own clock, rag.generators.slots, has already been running).
RETRIED = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
# The client's read timeout is the generation's `timeout_s`, the same bound as the policy's clock: whichever fires
# first, the reason is the timeout (a connect timeout is a server out of reach, said as such).
TIMED_OUT = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout)


def _server_message(response: httpx.Response) -> str:
    """The error text a server put in its body: OpenAI's {"error": {"message"}}, or whatever it sent."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)[:500]
        return str(err)[:500]
    return str(body)[:500]


class OpenAIGenerator:
    name = "openai"

    def __init__(self, settings: GeneratorSettings, *, transport: httpx.BaseTransport | None = None):
        self.settings = settings
        self.base_url = settings.openai_base_url.rstrip("/")
        headers = {"Content-Type": "application/json"}
        if settings.openai_api_key:
            headers["Authorization"] = f"Bearer {settings.openai_api_key}"
        # The read timeout bounds each wait for bytes, so a stream may run longer than it as long as tokens flow.
        timeout = httpx.Timeout(settings.timeout_s, connect=min(10.0, settings.timeout_s))
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._client.close()

    def _payload(self, messages: list[dict], max_new_tokens: int, temperature: float, stream: bool) -> dict:
        return {"model": self.settings.openai_model, "messages": messages, "max_tokens": max_new_tokens,
                "temperature": temperature, "stream": stream}

    def _fail(self, response: httpx.Response) -> GeneratorError:
        return GeneratorError(f"{self.base_url}/chat/completions answered {response.status_code}: "
                              f"{_server_message(response)}")

    def generate(self, messages: list[dict], *, max_new_tokens: int, temperature: float = 0.0) -> str:
        payload = self._payload(messages, max_new_tokens, temperature, False)
        for attempt in range(1 + RETRIES):
            try:
                r = self._client.post("/chat/completions", json=payload)
                break
            except RETRIED as e:
                if attempt < RETRIES:
                    continue
                raise GeneratorError(f"cannot reach {self.base_url} (tried {attempt + 1} times): "
                                     f"{type(e).__name__}: {e}") from e
            except TIMED_OUT as e:
                raise GeneratorTimeout(self.settings.timeout_s) from e
            except httpx.HTTPError as e:
                raise GeneratorError(f"cannot reach {self.base_url}: {type(e).__name__}: {e}") from e
        if r.status_code >= 400:
            raise self._fail(r)
        try:
            content = r.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise GeneratorError(f"{self.base_url} sent an unexpected completion: {r.text[:300]}") from e
        return (content or "").strip()

    def stream(self, messages: list[dict], *, max_new_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        payload = self._payload(messages, max_new_tokens, temperature, True)
        sent = 0  # tokens given to the caller: once there are some, a failure is final
        for attempt in range(1 + RETRIES):
            try:
                with self._client.stream("POST", "/chat/completions", json=payload) as r:
                    if r.status_code >= 400:
                        r.read()
                        raise self._fail(r)
                    # The end: [DONE], or a choice's `finish_reason` (transformers serve then closes, no [DONE]).
                    finished = False
                    for line in r.iter_lines():
                        piece, done = self._sse_piece(line)
                        if piece:
                            sent += 1
                            yield piece
                        finished = finished or done
                        if piece is None:  # [DONE]
                            break
                    if not finished:
                        raise GeneratorError(f"the stream from {self.base_url} stopped after {sent} pieces "
                                             "without its end (the server went away?)")
                    return
            except RETRIED as e:
                if sent == 0 and attempt < RETRIES:
                    continue
                tried = f" (tried {attempt + 1} times)" if sent == 0 else ""
                raise GeneratorError(f"stream from {self.base_url} failed after {sent} pieces{tried}: "
                                     f"{type(e).__name__}: {e}") from e
            except TIMED_OUT as e:
                raise GeneratorTimeout(self.settings.timeout_s) from e
            except httpx.HTTPError as e:
                raise GeneratorError(f"stream from {self.base_url} failed after {sent} pieces: "
                                     f"{type(e).__name__}: {e}") from e

    def _sse_piece(self, line: str) -> tuple[str | None, bool]:
        """(text, finished) of one SSE line: text '' for keep-alives and other fields, None at [DONE]; finished
        when the chunk carries a `finish_reason`."""
        if not line.startswith("data:"):
            return "", False
        data = line[5:].strip()
        if data == "[DONE]":
            return None, True
        try:
            event = json.loads(data)
        except ValueError as e:
            raise GeneratorError(f"{self.base_url} sent a malformed stream event: {data[:200]}") from e
        if isinstance(event, dict) and "error" in event:
            err = event["error"]
            raise GeneratorError(f"{self.base_url} stream error: "
                                 f"{err.get('message') if isinstance(err, dict) else err}")
        try:
            choice = event["choices"][0]
        except (KeyError, IndexError, TypeError):
            return "", False  # e.g. a usage-only chunk
        return (choice.get("delta") or {}).get("content") or "", bool(choice.get("finish_reason"))

    def generate_batch(self, batch: list[list[dict]], *, max_new_tokens: int) -> list[str]:
        # The server batches concurrent requests itself; sequential calls keep this client simple.
        return [self.generate(m, max_new_tokens=max_new_tokens) for m in batch]
