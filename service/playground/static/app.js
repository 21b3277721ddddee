// The playground's entry module: tabs (a WAI-ARIA tablist: arrow keys, Home, End), the API key (session
// storage, sent as X-API-Key), the service's readiness line, and the Index tab shown only for an admin key.

import { api, ApiError, describeError, getKey, setKey } from "./api.js";
import { initAsk } from "./ask.js";
import { $, $$ } from "./dom.js";
import { initIndex, loadGenerations } from "./indexadmin.js";
import { initRecs } from "./recs.js";
import { initSearch } from "./search.js";

function tabs() {
  return $$("#tabs [role=tab]").filter((t) => !t.hidden);
}

function selectTab(tab, { focus = true } = {}) {
  for (const t of $$("#tabs [role=tab]")) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
  }
  if (focus) tab.focus();
  if (tab.id === "tab-index") loadGenerations();
}

function initTabs() {
  const list = $("#tabs");
  list.addEventListener("click", (e) => {
    const tab = e.target.closest("[role=tab]");
    if (tab) selectTab(tab);
  });
  list.addEventListener("keydown", (e) => {
    const all = tabs();
    const i = all.indexOf(document.activeElement);
    if (i < 0) return;
    let next = null;
    if (e.key === "ArrowRight") next = all[(i + 1) % all.length];
    else if (e.key === "ArrowLeft") next = all[(i - 1 + all.length) % all.length];
    else if (e.key === "Home") next = all[0];
    else if (e.key === "End") next = all[all.length - 1];
    if (next) {
      e.preventDefault();
      selectTab(next);
    }
  });
}

/** Show the Index tab only when a key is entered and the service confirms it is an admin key. */
async function checkKey() {
  const status = $("#key-status");
  const indexTab = $("#tab-index");
  const key = getKey();
  let admin = false;
  if (!key) {
    let open = false;
    try {
      await api("GET", "/v1/admin/index/generations");
      open = true;
    } catch {
      /* 401: keys are required */
    }
    status.textContent = open ?
      "Open mode (rag serve --open): no key is needed and every caller is admin; enter any key to show " +
      "the Index tab." :
      "No key: the service needs one (X-API-Key). It is kept in this tab's session storage only.";
  } else {
    try {
      await api("GET", "/v1/admin/index/generations");
      admin = true;
      status.textContent = "Admin key: the Index tab is available.";
    } catch (err) {
      if (err instanceof ApiError && err.status === 403) status.textContent = "Reader key (Index needs an admin key).";
      else status.textContent = `Key not accepted: ${describeError(err)}`;
    }
  }
  status.dataset.role = admin ? "admin" : key ? "other" : "none";
  indexTab.hidden = !admin;
  if (!admin && indexTab.getAttribute("aria-selected") === "true") selectTab($("#tab-ask"), { focus: false });
}

function initKey() {
  const input = $("#api-key");
  input.value = getKey();
  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setKey(input.value.trim());
    checkKey();
  });
  $("#key-forget").addEventListener("click", () => {
    input.value = "";
    setKey("");
    checkKey();
    input.focus();
  });
}

async function checkReady() {
  const el = $("#ready");
  try {
    const r = await fetch("/ready", { headers: { Accept: "application/json" } });
    const body = await r.json();
    el.textContent = r.ok ?
      `Serving generation ${body.generation_id}: ${body.documents} documents, ${body.chunks} chunks, embedder ` +
      `${body.embedder}.` : `Not ready: ${body.reason || r.status}`;
    el.dataset.ready = String(r.ok);
  } catch (err) {
    el.textContent = `The service did not answer /ready (${describeError(err)}).`;
    el.dataset.ready = "false";
  }
}

initTabs();
initKey();
initAsk();
initSearch();
initRecs();
initIndex();
checkReady();
checkKey().finally(() => {
  document.body.dataset.ready = "true"; // every module is wired up (tests wait for this)
});
