// The service's HTTP API, from the page's own origin: JSON calls, the API key, errors, and the SSE stream of
// POST /v1/ask (Server-Sent Events over a POST: EventSource cannot POST, so fetch + a stream reader).

const KEY_STORAGE = "rag-playground.api-key";

export function getKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

export function setKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    /* storage disabled: the key lives only as long as the page */
  }
}

/** An error response from the API, with its JSON error body ({"error": {code, message, field, hint, request_id}}). */
export class ApiError extends Error {
  constructor(status, detail, retryAfter) {
    super(detail.message || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = detail.code || "";
    this.field = detail.field || "";
    this.hint = detail.hint || "";
    this.requestId = detail.request_id || "";
    this.retryAfter = retryAfter || "";
    this.detail = detail;
  }
}

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const key = getKey();
  if (key) h["X-API-Key"] = key;
  return h;
}

function url(path, query) {
  const u = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") u.searchParams.set(k, String(v));
  }
  return u.pathname + u.search; // always same-origin: only the path goes to fetch
}

async function errorFrom(response) {
  let detail = {};
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    detail = body && typeof body.error === "object" ? body.error : { message: body.detail || text };
  } catch {
    detail = { message: text.trim().slice(0, 300) || response.statusText };
  }
  return new ApiError(response.status, detail, response.headers.get("Retry-After"));
}

/** One JSON call. Resolves to {data, generationId}; rejects with ApiError (HTTP errors) or TypeError (network). */
export async function api(method, path, { body, query, signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url(path, query), init);
  if (!response.ok) throw await errorFrom(response);
  const data = response.status === 204 ? null : await response.json();
  return { data, generationId: response.headers.get("X-Generation-Id") || "" };
}

/** A readable sentence for any failure: status, code, message, the field it names, the hint, the request id. */
export function describeError(err) {
  if (err instanceof ApiError) {
    let s = `${err.status}${err.code ? " " + err.code : ""}: ${err.message}`;
    if (err.field) s += ` (field: ${err.field})`;
    if (err.hint) s += `. ${err.hint}`;
    if (err.retryAfter) s += ` Retry after ${err.retryAfter} s.`;
    if (err.requestId) s += ` [request ${err.requestId}]`;
    return s;
  }
  if (err && err.name === "AbortError") return "Stopped.";
  if (err instanceof TypeError) return `Could not reach the service (${err.message}).`;
  return String((err && err.message) || err);
}

/** Parse one SSE block ("event: x\ndata: {...}\nid: 3") into {event, data, id}; null for comments/keep-alives. */
export function parseSseBlock(block) {
  let event = "message";
  let id = "";
  const data = [];
  let seen = false;
  for (const line of block.split(/\r\n|\r|\n/)) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") id = value;
    else continue;
    seen = true;
  }
  if (!seen) return null;
  const raw = data.join("\n");
  let parsed = raw;
  try {
    parsed = raw ? JSON.parse(raw) : {};
  } catch {
    /* not JSON: keep the text */
  }
  return { event, data: parsed, id };
}

/**
 * POST /v1/ask with "stream": true and call onEvent(event, data, id) for each Server-Sent Event as it arrives.
 * Errors before the stream starts are ordinary JSON error responses (rejected as ApiError).
 */
export async function streamAsk(body, { signal, onEvent }) {
  const response = await fetch("/v1/ask", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!response.ok) throw await errorFrom(response);
  const generationId = response.headers.get("X-Generation-Id") || "";
  const type = response.headers.get("Content-Type") || "";
  if (!type.startsWith("text/event-stream")) {
    // A server that answered with one JSON body: present it as the same events.
    const done = await response.json();
    onEvent("done", done, "");
    return { generationId };
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder("utf-8");
  let buffer = "";
  const boundary = /\r\n\r\n|\n\n|\r\r/;
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let m;
    while ((m = boundary.exec(buffer))) {
      const block = buffer.slice(0, m.index);
      buffer = buffer.slice(m.index + m[0].length);
      const ev = parseSseBlock(block);
      if (ev) onEvent(ev.event, ev.data, ev.id);
    }
    if (done) break;
  }
  const last = parseSseBlock(buffer);
  if (last) onEvent(last.event, last.data, last.id);
  return { generationId };
}
