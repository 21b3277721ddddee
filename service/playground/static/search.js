// Search: the same query in the three modes (dense, keyword, hybrid) side by side, three POST /v1/search calls,
// each hit with its legs' ranks and scores and its metadata; passages, or one hit per document on request.

import { api } from "./api.js";
import { $, $$, beginSubmit, clearError, h, metaChips, num, setStatus, showError } from "./dom.js";
import { mountForm } from "./filters.js";

const MODES = ["dense", "keyword", "hybrid"];
let filters;

export function initSearch() {
  ({ filters } = mountForm("search", search));
}

function legs(l = {}, mode) {
  // Only the legs that ran: a dense search has no keyword rank to show, and the reverse.
  const leg = (name, rank, score) => h("li", {}, h("span", { class: "leg" }, name), " ",
    rank === null || rank === undefined ? h("span", { class: "muted" }, "not in its results") :
      `#${rank} (${num(score)})`);
  const items = [];
  if (mode !== "keyword") items.push(leg("dense", l.dense_rank, l.dense_score));
  if (mode !== "dense") items.push(leg("keyword", l.keyword_rank, l.keyword_score));
  if (l.rerank_score !== null && l.rerank_score !== undefined) {
    items.push(h("li", {}, h("span", { class: "leg" }, "rerank"), ` ${num(l.rerank_score)}`));
  }
  return h("ul", { class: "legs", "aria-label": "ranks and scores per retrieval leg" }, items);
}

function renderHits(section, res) {
  const list = $(".hits", section);
  list.replaceChildren();
  const timings = Object.entries(res.timings_ms || {}).map(([k, v]) => `${k.replace(/_ms$/, "")} ${num(v, 1)}`);
  $(".mode-meta", section).textContent = `${res.hits.length} hits` + (res.reranked ? " · reranked" : "") +
    (timings.length ? ` · ms: ${timings.join(", ")}` : "");
  for (const [i, hit] of res.hits.entries()) {
    const meta = hit.metadata || {};
    list.append(h("li", { class: "hit", lang: meta.language || null },
      h("h3", { class: "h4" }, hit.title || hit.doc_id),
      h("p", { class: "meta" }, h("span", {}, `#${i + 1} · score ${num(hit.score)}`), " ",
        h("code", { class: "muted" }, `${hit.doc_id} · ${hit.chunk_id}`)),
      legs(hit.legs, res.mode),
      metaChips(meta),
      hit.heading_path && hit.heading_path.length ?
        h("p", { class: "muted heading-path" }, hit.heading_path.join(" › ")) : null,
      h("p", { class: "passage-text clamp" }, hit.text || "")));
  }
  if (!res.hits.length) list.append(h("li", { class: "muted" }, "No hits."));
}

async function search() {
  const { form, errorBox, value: query } = beginSubmit("search", "query", "Type a query first.");
  if (query === null) return;
  const base = { query, ...filters.read() };
  if ($("#search-rerank").checked) base.rerank = true;
  if ($("#search-documents").checked) base.results = "documents";
  const status = $("#search-status");
  setStatus(status, "Searching in three modes…");
  const sections = $$("#search-results .mode");
  for (const s of sections) {
    $(".hits", s).replaceChildren();
    $(".mode-meta", s).textContent = "…";
    clearError($(".mode-error", s));
    s.dataset.state = "loading";
  }
  const results = await Promise.allSettled(MODES.map((mode) => api("POST", "/v1/search", { body: { ...base, mode } })));
  let failures = 0;
  let generation = "";
  results.forEach((r, i) => {
    const section = sections.find((s) => s.dataset.mode === MODES[i]);
    if (r.status === "fulfilled") {
      renderHits(section, r.value.data);
      generation = r.value.data.generation_id || generation;
      section.dataset.state = "done";
    } else {
      failures += 1;
      $(".mode-meta", section).textContent = "";
      showError($(".mode-error", section), r.reason);
      section.dataset.state = "error";
    }
  });
  if (failures === MODES.length) {
    // The same problem three times (a bad filter, no key): say it once, next to the form.
    for (const s of sections) clearError($(".mode-error", s));
    showError(errorBox, results[0].reason, form);
    setStatus(status, "");
  } else {
    setStatus(status, `Searched ${MODES.length - failures} of ${MODES.length} modes` +
      (generation ? ` on generation ${generation}.` : "."));
  }
}
