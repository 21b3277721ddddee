// Ask: stream an answer from POST /v1/ask ("stream": true) and make its grounding visible: every [n] opens the
// cited passage with the cited span highlighted; an abstention shows the closest passages instead.

import { streamAsk } from "./api.js";
import { $, beginSubmit, fillKv, h, num, setStatus, showError } from "./dom.js";
import { mountForm } from "./filters.js";

// A citation group as the service writes it: [1], [1, 2], [1-3], 【1】 (see rag/sentences.py).
const CITE_GROUP = /\[\s*\d{1,3}(?:\s*[-–,，;；]\s*\d{1,3})*\s*\]|【\s*\d{1,3}\s*】/g;

const state = { controller: null, passages: [], done: null, citations: [], events: 0 };
let filters;

export function initAsk() {
  let form;
  ({ form, filters } = mountForm("ask", ask));
  $("#ask-question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  for (const b of form.querySelectorAll("button.example")) {
    b.addEventListener("click", () => {
      $("#ask-question").value = b.dataset.question;
      $("#ask-question").focus();
    });
  }
  $("#ask-stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("#ask-cited-close").addEventListener("click", closeCited);
  $("#ask-cited").addEventListener("keydown", (e) => {
    if (e.key === "Escape") closeCited();
  });
}

function reset() {
  state.passages = [];
  state.done = null;
  state.citations = [];
  state.events = 0;
  $("#ask-answer").replaceChildren();
  $("#ask-answer").removeAttribute("lang");
  $("#ask-answer").classList.remove("is-abstained");
  $("#ask-abstained").hidden = true;
  $("#ask-disclaimer").hidden = true;
  $("#ask-sources").replaceChildren();
  $("#ask-passages").replaceChildren();
  $("#ask-meta").replaceChildren();
  $("#ask-timings tbody").replaceChildren();
  $("#ask-events-list").replaceChildren();
  $("#ask-events-count").textContent = "0";
  $("#ask-result").dataset.state = "";
  closeCited(false);
}

function logEvent(type, data) {
  state.events += 1;
  let what = "";
  if (type === "retrieval") what = `${(data.passages || []).length} passages, generation ${data.generation_id || "?"}`;
  else if (type === "token") what = JSON.stringify(String(data.text ?? "").slice(0, 80));
  else if (type === "citation") what = `[${data.n}] ${data.doc_id}`;
  else if (type === "done") what = data.abstained ? "abstained" : `${(data.citations || []).length} citations`;
  else if (type === "error") what = `${data.code || ""} ${data.message || ""}`.trim();
  $("#ask-events-list").append(h("li", { dataset: { event: type } }, h("code", {}, type), what ? ` ${what}` : ""));
  $("#ask-events-count").textContent = String(state.events);
}

async function ask() {
  const { form, errorBox, value: question } = beginSubmit("ask", "question", "Type a question first.");
  if (question === null) return;
  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  state.controller = controller;
  reset();
  const body = { question, mode: $("#ask-mode").value, ...filters.read() };
  if ($("#ask-backend").value) body.backend = $("#ask-backend").value;

  const answerEl = $("#ask-answer");
  const result = $("#ask-result");
  const status = $("#ask-status");
  $("#ask-submit").disabled = true;
  $("#ask-stop").disabled = false;
  result.hidden = false;
  result.dataset.state = "streaming";
  answerEl.setAttribute("aria-busy", "true");
  setStatus(status, "Retrieving passages…");
  const started = performance.now();
  let draft = "";
  let failed = false;
  try {
    await streamAsk(body, {
      signal: controller.signal,
      onEvent(type, data) {
        if (controller.signal.aborted) return;
        logEvent(type, data);
        if (type === "retrieval") {
          state.passages = data.passages || [];
          renderPassages(state.passages, false);
          fillKv($("#ask-meta"), [["Generation", data.generation_id]]);
          setStatus(status, `Retrieved ${state.passages.length} passages; answering…`);
        } else if (type === "token") {
          draft += String(data.text ?? "");
          answerEl.textContent = draft;
          setStatus(status, "Streaming the answer…");
        } else if (type === "citation") {
          state.citations.push(data);
        } else if (type === "done") {
          state.done = data;
          renderDone(data);
        } else if (type === "error") {
          failed = true;
          showError(errorBox, new Error(`Stream error${data.code ? ` (${data.code})` : ""}: ` +
            `${data.message || "the answer failed"}` + (data.request_id ? ` [request ${data.request_id}]` : "")));
        }
      },
    });
    const ms = Math.round(performance.now() - started);
    if (state.controller !== controller) return; // a newer question replaced this one
    if (state.done) {
      setStatus(status, state.done.abstained ? `Abstained after ${ms} ms.` : `Answered in ${ms} ms.`);
      result.dataset.state = state.done.abstained ? "abstained" : "answered";
    } else if (!failed && !controller.signal.aborted) {
      showError(errorBox, new Error("The stream ended before the answer was complete."));
      result.dataset.state = "incomplete";
    } else {
      result.dataset.state = failed ? "error" : "stopped";
      setStatus(status, failed ? "" : "Stopped.");
    }
  } catch (err) {
    if (state.controller !== controller) return;
    result.dataset.state = err.name === "AbortError" ? "stopped" : "error";
    if (err.name === "AbortError") setStatus(status, "Stopped.");
    else {
      setStatus(status, "");
      showError(errorBox, err, form);
      if (!draft) result.hidden = true;
    }
  } finally {
    if (state.controller === controller) {
      answerEl.removeAttribute("aria-busy");
      state.controller = null;
      $("#ask-submit").disabled = false;
      $("#ask-stop").disabled = true;
    }
  }
}

/** The answer text with every [n] as a button that opens passage n. */
export function renderAnswerText(el, text, onCite) {
  el.replaceChildren();
  let last = 0;
  for (const m of text.matchAll(CITE_GROUP)) {
    if (m.index > last) el.append(text.slice(last, m.index));
    // The claim this group cites: the text since the previous group (leading punctuation trimmed).
    const claim = text.slice(last, m.index).replace(/^[\s.!?。！？；;,，]+/, "").trim();
    for (const n of m[0].match(/\d{1,3}/g)) {
      el.append(h("button", { type: "button", class: "cite", dataset: { n, claim },
        "aria-label": `citation ${n}: show the cited passage`, onclick: (e) => onCite(Number(n), e.currentTarget) },
      `[${n}]`));
    }
    last = m.index + m[0].length;
  }
  if (last < text.length) el.append(text.slice(last));
}

function terms(s) {
  // words, and single characters for CJK text (which has no spaces)
  return new Set(String(s).toLowerCase().match(/[\u3400-\u9fff]|[\p{L}\p{N}]+/gu) || []);
}

/** Which of `spans` supports `claim`: containment first, else the largest share of shared terms. */
export function bestSpan(spans, claim) {
  const norm = (s) => String(s || "").replace(/\s+/g, " ").trim().toLowerCase();
  const c = norm(claim);
  if (!c || !spans.length) return -1;
  let best = -1;
  let bestScore = 0;
  const ct = terms(c);
  spans.forEach((span, i) => {
    const sp = norm(span);
    let score;
    if (sp && (c.includes(sp) || sp.includes(c))) score = 2;
    else {
      const st = terms(sp);
      let shared = 0;
      for (const t of st) if (ct.has(t)) shared += 1;
      score = shared / Math.max(1, Math.min(st.size, ct.size));
    }
    if (score > bestScore) {
      bestScore = score;
      best = i;
    }
  });
  return best;
}

function passageFor(n) {
  const fromDone = state.done && (state.done.passages || []).find((p) => p.n === n);
  return fromDone || state.passages.find((p) => p.n === n) || null;
}

function citationsFor(n) {
  const list = state.done ? state.done.citations || [] : state.citations;
  return list.filter((c) => c.n === n);
}

function renderDone(d) {
  const answerEl = $("#ask-answer");
  if (d.language) answerEl.setAttribute("lang", d.language);
  answerEl.classList.toggle("is-abstained", !!d.abstained);
  $("#ask-abstained").hidden = !d.abstained;
  renderAnswerText(answerEl, d.answer || "", openCited);
  const disclaimer = $("#ask-disclaimer");
  disclaimer.hidden = !d.disclaimer;
  disclaimer.textContent = d.disclaimer || "";

  const sources = $("#ask-sources");
  sources.replaceChildren();
  const seen = new Set();
  for (const c of d.citations || []) {
    if (seen.has(c.n)) continue;
    seen.add(c.n);
    sources.append(h("li", {},
      h("button", { type: "button", class: "cite", dataset: { n: c.n }, onclick: (e) => openCited(c.n, e.currentTarget),
        "aria-label": `citation ${c.n}: show the cited passage` }, `[${c.n}]`),
      " ", h("span", { class: "title" }, c.title || c.doc_id), " ",
      h("code", { class: "muted" }, `${c.doc_id} · ${c.chunk_id}`)));
  }
  if (!seen.size) sources.append(h("li", { class: "muted" }, d.abstained ? "None: the service abstained." : "None."));
  if (d.passages && d.passages.length) renderPassages(d.passages, !!d.abstained);

  const checks = [];
  if (d.invalid_citations_removed) checks.push(`${d.invalid_citations_removed} invalid citation(s) removed`);
  if (d.unsupported_sentences) checks.push(`${d.unsupported_sentences} unsupported sentence(s)`);
  if (d.citations_added) checks.push(`${d.citations_added} citation(s) added`);
  fillKv($("#ask-meta"), [
    ["Backend", d.backend || "–"],
    ["Fallback", d.fallback],
    ["Abstained", d.abstained ? "yes" : "no"],
    ["Expects", d.expects],
    ["Answerable", d.answerable === null || d.answerable === undefined ? null : num(d.answerable, 2)],
    ["Language", d.language],
    ["Retrieval query", d.query && d.query !== $("#ask-question").value.trim() ? d.query : null],
    ["Checks", checks.join("; ") || "all citations valid"],
    ["Generation", d.generation_id],
  ]);
  const tbody = $("#ask-timings tbody");
  tbody.replaceChildren();
  for (const [k, v] of Object.entries(d.timings_ms || {})) {
    tbody.append(h("tr", {}, h("th", { scope: "row" }, k.replace(/_ms$/, "")), h("td", {}, num(v, 1))));
  }
}

function renderPassages(passages, closest) {
  $("#ask-passages-heading").textContent = closest ? "Closest passages (they do not answer it)" : "Passages";
  const list = $("#ask-passages");
  list.replaceChildren();
  for (const p of passages) {
    list.append(h("li", { id: `ask-passage-${p.n}`, value: p.n, lang: p.language || null },
      h("p", { class: "meta" }, h("strong", {}, `[${p.n}] ${p.title || p.doc_id}`), " ",
        h("code", { class: "muted" }, `${p.doc_id} · ${p.chunk_id}`),
        p.heading ? h("span", { class: "muted" }, ` · ${p.heading}`) : null,
        p.score !== null && p.score !== undefined ? h("span", { class: "muted" }, ` · score ${num(p.score)}`) : null),
      h("p", { class: "passage-text clamp" }, p.text || "")));
  }
}

/**
 * Split `text` into [{text, mark, span}] pieces, marking where any of `spans` occurs (`span`: its index).
 * Whitespace differences between the span and the passage (line breaks, runs of spaces) do not prevent a match.
 */
export function highlight(text, spans) {
  const norm = [];
  const map = [];
  let prevSpace = false;
  for (let i = 0; i < text.length; i++) {
    const space = /\s/.test(text[i]);
    if (space && prevSpace) continue;
    norm.push(space ? " " : text[i]);
    map.push(i);
    prevSpace = space;
  }
  const normText = norm.join("");
  const ranges = [];
  spans.forEach((span, i) => {
    const s = String(span || "").replace(/\s+/g, " ").trim();
    if (!s) return;
    let at = normText.indexOf(s);
    while (at >= 0) {
      const start = map[at];
      const end = map[at + s.length - 1] + 1;
      ranges.push([start, end, i]);
      at = normText.indexOf(s, at + s.length);
    }
  });
  ranges.sort((a, b) => a[0] - b[0]);
  const pieces = [];
  let pos = 0;
  for (const [start, end, i] of ranges) {
    if (end <= pos) continue;
    const from = Math.max(start, pos);
    if (from > pos) pieces.push({ text: text.slice(pos, from), mark: false, span: -1 });
    pieces.push({ text: text.slice(from, end), mark: true, span: i });
    pos = end;
  }
  if (pos < text.length) pieces.push({ text: text.slice(pos), mark: false, span: -1 });
  return pieces;
}

let opener = null;

function openCited(n, button) {
  const panel = $("#ask-cited");
  const p = passageFor(n);
  const cites = citationsFor(n);
  opener = button || null;
  for (const b of document.querySelectorAll("#ask-result button.cite")) {
    b.setAttribute("aria-expanded", String(button ? b === button : Number(b.dataset.n) === n));
    b.setAttribute("aria-controls", "ask-cited");
  }
  const title = (p && p.title) || (cites[0] && cites[0].title) || "";
  $("#ask-cited-heading").textContent = `Cited passage [${n}]${title ? ": " + title : ""}`;
  const docId = (p && p.doc_id) || (cites[0] && cites[0].doc_id) || "?";
  const chunkId = (p && p.chunk_id) || (cites[0] && cites[0].chunk_id) || "?";
  $("#ask-cited-meta").replaceChildren(h("code", {}, `${docId} · ${chunkId}`),
    p && p.heading ? ` · ${p.heading}` : "");
  const textEl = $("#ask-cited-text");
  textEl.replaceChildren();
  if (p && p.language) textEl.setAttribute("lang", p.language);
  else textEl.removeAttribute("lang");
  const spans = cites.map((c) => c.span).filter(Boolean);
  // The span behind the sentence whose [n] was clicked gets the strong highlight; other spans of n a light one.
  const current = button && button.dataset.claim !== undefined ? bestSpan(spans, button.dataset.claim) : -1;
  const spansNote = $("#ask-cited-spans");
  if (p) {
    const pieces = highlight(p.text || "", spans);
    for (const piece of pieces) {
      textEl.append(piece.mark ? h("mark", { class: piece.span === current ? "current" : null }, piece.text) :
        piece.text);
    }
    const found = pieces.some((x) => x.mark);
    const several = new Set(pieces.filter((x) => x.mark).map((x) => x.span)).size > 1;
    spansNote.textContent = !spans.length ? "No span was recorded for this citation." :
      !found ? `The cited span does not occur verbatim in the passage: “${spans.join(" … ")}”` :
        several && current >= 0 ? "Highlighted: the spans this passage supports; outlined: the one for the " +
          "sentence you chose." : "The highlighted text is the span that supports the cited sentence.";
  } else {
    textEl.append(spans.length ? h("mark", {}, spans.join(" … ")) : "(the passage was not returned)");
    spansNote.textContent = "Only the cited span is available for this citation.";
  }
  panel.dataset.n = String(n);
  panel.hidden = false;
  panel.focus();
  const mark = $("mark.current", textEl) || $("mark", textEl);
  if (mark) mark.scrollIntoView({ block: "nearest" });
}

function closeCited(returnFocus = true) {
  const panel = $("#ask-cited");
  if (panel.hidden) return;
  panel.hidden = true;
  delete panel.dataset.n;
  for (const b of document.querySelectorAll("#ask-result button.cite")) b.setAttribute("aria-expanded", "false");
  if (returnFocus && opener && opener.isConnected) opener.focus();
  opener = null;
}

