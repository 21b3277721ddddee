// Small DOM helpers. Text from the API is always set as text (never parsed as HTML).

import { ApiError, describeError } from "./api.js";

/** h("p", {class: "x", onclick: fn}, "text", child) -> element. Attributes that are null/false are left out. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

export function num(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(Number(v))) return "–";
  const n = Number(v);
  return Number.isInteger(n) ? String(n) : n.toFixed(digits);
}

export function setStatus(el, text) {
  el.textContent = text || "";
}

/** Show an error in a role="alert" box and mark the form control the API's `field` names, when there is one. */
export function showError(box, err, form) {
  clearError(box, form);
  box.textContent = describeError(err);
  box.hidden = false;
  if (form && err instanceof ApiError && err.field) {
    const top = err.field.replace(/\[\d+\]$/, "");
    const control = form.querySelector(`[data-field="${CSS.escape(err.field)}"]`) ||
      form.querySelector(`[data-field="${CSS.escape(top)}"]`) ||
      form.querySelector(`[data-field="${CSS.escape(top.split(".").pop())}"]`);
    if (control) {
      control.setAttribute("aria-invalid", "true");
      if (!box.id) box.id = `err-${Math.random().toString(36).slice(2)}`;
      control.setAttribute("aria-errormessage", box.id);
    }
  }
}

/** A submit of `#<prefix>-form` begins: its error box cleared, and the trimmed text of its required field
 * `#<prefix>-<name>` as `value` (null after marking the field and saying `missing`). */
export function beginSubmit(prefix, name, missing) {
  const form = $(`#${prefix}-form`);
  const errorBox = $(`#${prefix}-error`);
  clearError(errorBox, form);
  const input = $(`#${prefix}-${name}`);
  const value = input.value.trim() || null;
  if (value === null) {
    showError(errorBox, new Error(missing));
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
  return { form, errorBox, value };
}

export function clearError(box, form) {
  box.hidden = true;
  box.textContent = "";
  if (form) {
    for (const el of form.querySelectorAll("[aria-invalid]")) {
      el.removeAttribute("aria-invalid");
      el.removeAttribute("aria-errormessage");
    }
  }
}

/** Metadata chips: domain, language, tags, audience, date. */
export function metaChips(meta = {}) {
  const chips = [];
  const add = (label, value) => {
    if (value === null || value === undefined || value === "" || (Array.isArray(value) && !value.length)) return;
    chips.push(h("li", { class: "chip" }, h("span", { class: "sr-only" }, `${label}: `),
      Array.isArray(value) ? value.join(", ") : String(value)));
  };
  add("domain", meta.domain);
  add("language", meta.language);
  add("tags", meta.tags);
  add("audience", meta.audience);
  add("date", meta.date);
  return chips.length ? h("ul", { class: "chips", "aria-label": "metadata" }, chips) : null;
}

/** A <dl> filled from [label, value] pairs, skipping empty values. */
export function fillKv(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) {
    if (v === null || v === undefined || v === "") continue;
    dl.append(h("dt", {}, k), h("dd", {}, v instanceof Node ? v : String(v)));
  }
}
