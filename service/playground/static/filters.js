// The metadata filter controls shared by Ask and Search: domain (the request's `domain` shortcut) and
// `filters` (language, tags, audience, dates), plus top_k.

import { $, h } from "./dom.js";

const DOMAINS = ["finance", "medical", "education"];

function field(label, control, hint) {
  return h("p", { class: "field" }, h("label", { for: control.id }, label), control,
    hint ? h("span", { class: "hint muted", id: `${control.id}-hint` }, hint) : null);
}

/** The form `#<prefix>-form` with the filter controls in its slot, submitting through `run`. */
export function mountForm(prefix, run) {
  const form = $(`#${prefix}-form`);
  const filters = mountFilters($(".filters-slot", form), prefix);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    run();
  });
  return { form, filters };
}

/** Build the controls into `slot` (ids prefixed with `prefix`). */
export function mountFilters(slot, prefix) {
  const id = (name) => `${prefix}-${name}`;
  const domain = h("select", { id: id("domain"), name: "domain", "data-field": "domain" },
    h("option", { value: "" }, "any"), DOMAINS.map((d) => h("option", { value: d }, d)));
  const language = h("select", { id: id("language"), name: "language", "data-field": "filters.language" },
    h("option", { value: "" }, "any"), h("option", { value: "en" }, "English (en)"),
    h("option", { value: "zh" }, "Chinese (zh)"));
  const tags = h("input", { id: id("tags"), name: "tags", type: "text", "data-field": "filters.tags",
    "aria-describedby": `${id("tags")}-hint`, placeholder: "etfs, investing" });
  const audience = h("input", { id: id("audience"), name: "audience", type: "text",
    "data-field": "filters.audience", placeholder: "general" });
  const from = h("input", { id: id("date-from"), name: "date_from", type: "date", "data-field": "filters.date_from" });
  const to = h("input", { id: id("date-to"), name: "date_to", type: "date", "data-field": "filters.date_to" });
  const topK = h("input", { id: id("top-k"), name: "top_k", type: "number", min: "1", max: "50",
    "data-field": "top_k", placeholder: "default" });
  slot.replaceChildren(
    field("Domain", domain),
    h("details", { class: "more-filters" }, h("summary", {}, "More filters"),
      h("div", { class: "controls" },
        field("Language", language),
        field("Tags", tags, "comma-separated; any of them"),
        field("Audience", audience),
        field("Date from", from),
        field("Date to", to),
        field("Top k", topK))),
  );
  return {
    /** The request fields these controls set: {domain?, filters?, top_k?}. */
    read() {
      const out = {};
      const filters = {};
      if (domain.value) out.domain = domain.value;
      if (language.value) filters.language = language.value;
      const tagList = tags.value.split(/[,，]/).map((t) => t.trim()).filter(Boolean);
      if (tagList.length) filters.tags = tagList;
      if (audience.value.trim()) filters.audience = audience.value.trim();
      if (from.value) filters.date_from = from.value;
      if (to.value) filters.date_to = to.value;
      if (Object.keys(filters).length) out.filters = filters;
      if (topK.value !== "") out.top_k = Number(topK.value);
      return out;
    },
  };
}
