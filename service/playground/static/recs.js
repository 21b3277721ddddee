// Recommendations: a user's "for you" list with reasons (and blurbs with explain=true), "more like this" for an
// item, trending per domain; like / dismiss post an event (POST /v1/events) and the list is fetched again.

import { api } from "./api.js";
import { $, clearError, h, num, setStatus, showError } from "./dom.js";

let current = null; // {user_id, domain, k, explain} of the list on screen

export function initRecs() {
  $("#recs-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const form = $("#recs-form");
    current = {
      user_id: $("#recs-user").value.trim(),
      domain: $("#recs-domain").value,
      k: $("#recs-k").value,
      explain: $("#recs-explain").checked,
    };
    if (!current.user_id) {
      showError($("#recs-error"), new Error("Type or pick a user id first."));
      $("#recs-user").setAttribute("aria-invalid", "true");
      $("#recs-user").focus();
      current = null;
      return;
    }
    clearError($("#recs-error"), form);
    loadRecs();
  });
  $("#trending-form").addEventListener("submit", (e) => {
    e.preventDefault();
    loadTrending();
  });
}

function itemRow(item, { actions }) {
  const title = h("h3", { class: "h4" }, item.title || item.doc_id);
  const row = h("li", { class: "item", dataset: { docId: item.doc_id } },
    title,
    h("p", { class: "meta" }, h("code", { class: "muted" }, item.doc_id), " ",
      item.domain ? h("span", { class: "chip" }, item.domain) : null,
      h("span", { class: "muted" }, ` score ${num(item.score)}`)),
    item.reason ? h("p", { class: "reason" }, item.reason) : null,
    item.blurb ? h("p", { class: "blurb" }, h("span", { class: "sr-only" }, "Blurb: "), item.blurb) : null);
  if (actions) {
    const label = item.title || item.doc_id;
    row.append(h("p", { class: "item-actions" },
      h("button", { type: "button", class: "like", "aria-label": `Like ${label}`,
        onclick: () => sendEvent(item, "like") }, "Like"),
      h("button", { type: "button", class: "dismiss", "aria-label": `Dismiss ${label}`,
        onclick: () => sendEvent(item, "dismiss") }, "Dismiss"),
      h("button", { type: "button", class: "similar", "aria-label": `More like ${label}`,
        onclick: () => loadSimilar(item) }, "More like this")));
  } else {
    row.append(h("p", { class: "item-actions" },
      h("button", { type: "button", class: "similar", "aria-label": `More like ${item.title || item.doc_id}`,
        onclick: () => loadSimilar(item) }, "More like this")));
  }
  return row;
}

async function loadRecs(note = "") {
  if (!current) return;
  const list = $("#recs-list");
  const status = $("#recs-status");
  const form = $("#recs-form");
  setStatus(status, `Loading recommendations for ${current.user_id}…`);
  list.setAttribute("aria-busy", "true");
  try {
    const { data } = await api("GET", `/v1/users/${encodeURIComponent(current.user_id)}/recommendations`, {
      query: { k: current.k, domain: current.domain, explain: current.explain ? "true" : "" },
    });
    list.replaceChildren(...data.items.map((item) => itemRow(item, { actions: true })));
    if (!data.items.length) list.append(h("li", { class: "muted" }, "Nothing to recommend."));
    const t = Object.entries(data.timings_ms || {}).map(([k, v]) => `${k.replace(/_ms$/, "")} ${num(v, 1)}`);
    $("#recs-meta").textContent = `${data.user_id || current.user_id} · strategy ${data.strategy} · generation ` +
      `${data.generation_id}` + (t.length ? ` · ms: ${t.join(", ")}` : "");
    list.dataset.user = current.user_id;
    setStatus(status, note || `${data.items.length} recommendations for ${current.user_id}.`);
  } catch (err) {
    setStatus(status, "");
    showError($("#recs-error"), err, form);
  } finally {
    list.removeAttribute("aria-busy");
  }
}

async function sendEvent(item, type) {
  if (!current) return;
  const errorBox = $("#recs-error");
  clearError(errorBox);
  try {
    const { data } = await api("POST", "/v1/events", {
      body: { events: [{ user_id: current.user_id, doc_id: item.doc_id, type }] },
    });
    if (data.rejected && data.rejected.length) {
      const r = data.rejected[0];
      showError(errorBox, new Error(`The ${type} event was rejected: ${r.reason}${r.field ? ` (field: ${r.field})` : ""}`));
      return;
    }
    const verb = type === "like" ? "Liked" : "Dismissed";
    await loadRecs(`${verb} “${item.title || item.doc_id}”; the list was fetched again.`);
    const first = $("#recs-list button");
    if (first && document.activeElement === document.body) first.focus();
  } catch (err) {
    showError(errorBox, err);
  }
}

async function loadSimilar(item) {
  const list = $("#similar-list");
  const errorBox = $("#similar-error");
  clearError(errorBox);
  $("#similar-meta").textContent = `Loading items like “${item.title || item.doc_id}”…`;
  try {
    const { data } = await api("GET", `/v1/items/${encodeURIComponent(item.doc_id)}/similar`, { query: { k: 5 } });
    list.replaceChildren(...data.items.map((it) => itemRow(it, { actions: false })));
    if (!data.items.length) list.append(h("li", { class: "muted" }, "Nothing similar."));
    list.dataset.docId = item.doc_id;
    $("#similar-meta").textContent = `Like “${item.title || item.doc_id}” (${item.doc_id}) · strategy ${data.strategy}`;
    $("#similar-heading").scrollIntoView({ block: "nearest" });
  } catch (err) {
    $("#similar-meta").textContent = "";
    showError(errorBox, err);
  }
}

async function loadTrending() {
  const list = $("#trending-list");
  const errorBox = $("#trending-error");
  clearError(errorBox);
  const domain = $("#trending-domain").value;
  $("#trending-meta").textContent = "Loading…";
  try {
    const { data } = await api("GET", "/v1/trending", { query: { domain, k: 5 } });
    list.replaceChildren(...data.items.map((it) => itemRow(it, { actions: false })));
    if (!data.items.length) list.append(h("li", { class: "muted" }, "Nothing trending yet."));
    $("#trending-meta").textContent = `${domain || "all domains"} · strategy ${data.strategy}`;
  } catch (err) {
    $("#trending-meta").textContent = "";
    showError(errorBox, err, $("#trending-form"));
  }
}
