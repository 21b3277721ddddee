// Index (admin key only): generations with the published one marked, a rebuild as a background job whose
// progress is polled, and rollback (publish an older generation).

import { api } from "./api.js";
import { $, clearError, h, num, setStatus, showError } from "./dom.js";

const POLL_MS = 700;
let polling = null;

export function initIndex() {
  $("#gens-refresh").addEventListener("click", () => loadGenerations());
  $("#rebuild-form").addEventListener("submit", (e) => {
    e.preventDefault();
    rebuild();
  });
}

export async function loadGenerations(note = "") {
  const tbody = $("#gens tbody");
  const errorBox = $("#index-error");
  clearError(errorBox);
  try {
    const { data } = await api("GET", "/v1/admin/index/generations");
    tbody.replaceChildren(...data.map(row));
    setStatus($("#index-status"), note || `${data.length} generation(s).`);
  } catch (err) {
    showError(errorBox, err);
  }
}

function row(g) {
  const emb = g.embedder || {};
  const counts = g.counts || {};
  const state = [g.published ? "published" : "", g.loaded ? "loaded" : ""].filter(Boolean).join(", ") || "–";
  const actions = g.published ? h("span", { class: "muted" }, "serving") :
    h("button", { type: "button", class: "rollback", "aria-label": `Publish ${g.id} (roll back to it)`,
      onclick: () => rollback(g.id) }, "Publish (roll back)");
  return h("tr", { class: g.published ? "published" : null, dataset: { id: g.id } },
    h("th", { scope: "row" }, h("code", {}, g.id), g.published ? h("span", { class: "badge" }, "★ published") : null),
    h("td", {}, state),
    h("td", {}, g.created_at ? new Date(g.created_at).toLocaleString() : "–"),
    h("td", {}, `${emb.name || "?"}${emb.dim ? ` (${emb.dim}-d)` : ""}`),
    h("td", {}, num(counts.documents)),
    h("td", {}, num(counts.chunks)),
    h("td", {}, g.index_type || "–"),
    h("td", {}, g.build_seconds === null || g.build_seconds === undefined ? "–" : `${num(g.build_seconds, 1)} s`),
    h("td", {}, actions));
}

function showJob(job) {
  $("#job").hidden = false;
  const progress = $("#job-progress");
  const total = Number(job.total) || 0;
  if (total > 0) {
    progress.max = total;
    progress.value = Math.min(Number(job.done) || 0, total);
  } else if (job.state === "succeeded") {
    progress.max = 1;
    progress.value = 1;
  } else {
    progress.removeAttribute("value"); // indeterminate
  }
  let text = `Job ${job.id}: ${job.state}`;
  if (job.stage) text += ` · ${job.stage}`;
  if (total > 0) text += ` · ${job.done}/${total}`;
  if (job.state === "succeeded" && job.result) {
    const r = job.result;
    text += r.unchanged ? " · nothing changed, nothing published" :
      r.generation_id ? ` · published ${r.generation_id}` : "";
  }
  if (job.error) text += ` · ${job.error}`;
  $("#job-text").textContent = text;
  $("#job").dataset.state = job.state;
}

async function follow(jobId) {
  if (polling) clearTimeout(polling);
  const button = $("#rebuild-start");
  button.disabled = true;
  const tick = async () => {
    try {
      const { data } = await api("GET", `/v1/admin/jobs/${encodeURIComponent(jobId)}`);
      showJob(data);
      if (data.state === "succeeded" || data.state === "failed") {
        polling = null;
        button.disabled = false;
        await loadGenerations(data.state === "succeeded" ? "The rebuild finished." : "The rebuild failed.");
        return;
      }
    } catch (err) {
      showError($("#index-error"), err);
    }
    polling = setTimeout(tick, POLL_MS);
  };
  await tick();
}

async function rebuild() {
  const errorBox = $("#index-error");
  clearError(errorBox);
  const body = $("#rebuild-force").checked ? { force: true } : {};
  try {
    const { data } = await api("POST", "/v1/admin/index/rebuild", { body });
    showJob(data);
    await follow(data.id);
  } catch (err) {
    showError(errorBox, err);
    if (err.status === 409 && err.detail && err.detail.job && err.detail.job.id) {
      await follow(err.detail.job.id); // another rebuild is running: follow that one
    }
  }
}

async function rollback(id) {
  const errorBox = $("#index-error");
  clearError(errorBox);
  try {
    const { data } = await api("POST", "/v1/admin/index/rollback", { body: { generation_id: id } });
    await loadGenerations(`Published ${data.published} (was ${data.previous || "none"}).`);
  } catch (err) {
    showError(errorBox, err);
  }
}
