"""The web playground in a real browser: Debian's chromium, headless, driven by Playwright, against a real
`rag serve` process over the small test corpus (English and Chinese documents, built once for this module).

Every test checks, when it ends, that the page requested nothing outside the service's own origin and raised no
script error. Screenshots go to tests/screenshots/ (gitignored; RAG_PLAYGROUND_SCREENSHOTS overrides).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import make_settings
from test_service_process import free_port, rag_command

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(os.environ.get("RAG_PLAYGROUND_SCREENSHOTS") or Path(__file__).parent / "screenshots")

READER_KEY = "pw-reader-key"  # public documents only
CLINIC_KEY = "pw-clinic-key"  # a reader in the group clinicians
ADMIN_KEY = "pw-admin-key"
KEYS = {READER_KEY: "reader", CLINIC_KEY: {"role": "reader", "groups": ["clinicians"], "id": "pw-clinic"},
        ADMIN_KEY: "admin"}

# A clinicians-only document beside the small corpus; its marker word occurs nowhere else.
HIDDEN_ID, HIDDEN_MARK = "med-ward-protocol", "Quorvex"
HIDDEN_DOC = f"""---
id: {HIDDEN_ID}
title: "{HIDDEN_MARK} ward blood pressure protocol"
domain: medical
language: en
tags: [blood pressure, protocol]
date: 2025-05-01
access: [clinicians]
---
# {HIDDEN_MARK} ward blood pressure protocol
On the {HIDDEN_MARK} ward, blood pressure is measured every four hours, seated, with the cuff at heart level.
A reading above 180/110 mmHg starts the {HIDDEN_MARK} escalation bundle within 15 minutes.
"""


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)"
    return None


pytestmark = [pytest.mark.browser, pytest.mark.skipif(_missing() is not None, reason=_missing() or "")]

USERS = [
    {"user_id": "u-pw-fin", "name": "Fin", "interests": ["etfs", "mortgages"], "domains": ["finance"]},
    {"user_id": "u-pw-med", "name": "Med", "interests": ["blood pressure"], "domains": ["medical"]},
]
EVENTS = [
    {"user_id": "u-pw-fin", "doc_id": "fin-etf", "type": "like", "ts": "2025-06-01T10:00:00Z"},
    {"user_id": "u-pw-fin", "doc_id": "edu-study", "type": "view", "ts": "2025-06-02T10:00:00Z"},
    {"user_id": "u-pw-med", "doc_id": "med-hypertension", "type": "like", "ts": "2025-06-01T10:00:00Z"},
    {"user_id": "u-pw-med", "doc_id": "med-vaccines", "type": "click", "ts": "2025-06-03T10:00:00Z"},
    # events on the hidden document: accepted, and never shown to a caller who may not see it
    {"user_id": "u-pw-med", "doc_id": HIDDEN_ID, "type": "like", "ts": "2025-06-04T10:00:00Z"},
    {"user_id": "u-pw-fin", "doc_id": HIDDEN_ID, "type": "like", "ts": "2025-06-04T11:00:00Z"},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, small_corpus, models_dir):
    """`rag serve` on a free port over the small corpus plus one clinicians-only document, with a public reader,
    a clinicians' reader and an admin key, and demo users."""
    from indexer.build import build

    root = tmp_path_factory.mktemp("playground")
    corpus = root / "corpus"
    shutil.copytree(small_corpus, corpus)
    (corpus / "medical" / "ward-protocol.md").write_text(HIDDEN_DOC, encoding="utf-8")
    home = root / "home"
    report = build(make_settings(home, models_dir), [corpus], show_progress=False)
    demo = root / "demo"
    demo.mkdir()
    (demo / "users.jsonl").write_text("".join(json.dumps(u) + "\n" for u in USERS))
    (demo / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update({"RAG_HOME": str(home), "RAG_MODEL_CACHE": str(models_dir), "HF_HUB_OFFLINE": "1",
                "RAG_GENERATOR__BACKEND": "extractive", "RAG_SERVICE__RATE_LIMIT_PER_MINUTE": "100000",
                "RAG_SERVICE__API_KEYS": json.dumps(KEYS)})
    log_path = root / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([*rag_command(), "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--load-demo", str(demo)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"{base}/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                pass
            if ready:
                break
            time.sleep(0.3)
        if not ready:
            proc.kill()
            proc.wait(10)
            pytest.fail(f"rag serve did not become ready; log:\n{log_path.read_text(errors='replace')[-4000:]}")
        yield base, report, log_path
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Tab:
    """One page of the playground, with every request and script error it produced."""

    def __init__(self, page, base: str):
        self.page = page
        self.base = base
        self.requests: list[str] = []
        self.responses: list = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("response", lambda r: self.responses.append(r))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" and not _expected(m.text)
                else None)

    def open(self, key: str | None = READER_KEY):
        from playwright.sync_api import expect

        self.page.goto(self.base + "/")
        expect(self.page.locator("body")).to_have_attribute("data-ready", "true")
        if key is not None:
            self.use_key(key)
        return self

    def use_key(self, key: str):
        from playwright.sync_api import expect

        status = self.page.locator("#key-status")
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Use key").click()
        expect(status).to_have_attribute("data-role", "admin" if key == ADMIN_KEY else "other")

    def tab(self, name: str):
        self.page.get_by_role("tab", name=name).click()

    def foreign_requests(self) -> list[str]:
        origin = urlsplit(self.base)
        return [u for u in self.requests if urlsplit(u)[:2] != origin[:2] and not u.startswith("data:")]

    def shot(self, name: str, until: str, max_height: int = 1100):
        """The page from its top down to the bottom of `until` (at most `max_height` px)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        box = self.page.locator(until).bounding_box()
        scroll = self.page.evaluate("window.scrollY")
        bottom = min(box["y"] + scroll + box["height"] + 16, max_height)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True,
                             clip={"x": 0, "y": 0, "width": self.page.viewport_size["width"], "height": bottom})


def _expected(text: str) -> bool:
    # The browser logs every non-2xx fetch as a console error; the tests that provoke 401/400/403 expect them.
    return "Failed to load resource" in text


@pytest.fixture
def tab(server, browser):
    base, _, _ = server
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=base)
    context.set_default_timeout(60_000)
    t = Tab(context.new_page(), base)
    yield t
    context.close()
    assert t.requests, "the page made no requests"
    assert t.foreign_requests() == [], f"requests outside {base}: {t.foreign_requests()}"
    assert t.errors == [], f"script errors: {t.errors}"


def _expect():
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    return expect


# --- the page ---------------------------------------------------------------------------------------------

def test_page_is_served_locally_with_a_strict_policy_and_keyboard_tabs(tab, server):
    expect = _expect()
    base, report, _ = server
    tab.open(key=None)
    page = tab.page
    doc = next(r for r in tab.responses if r.url == base + "/")
    assert doc.status == 200 and doc.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in doc.headers["content-security-policy"]
    assert "script-src 'self'" in doc.headers["content-security-policy"]
    loaded = {urlsplit(u).path for u in tab.requests}
    assert {"/playground/app.js", "/playground/api.js", "/playground/ask.js", "/playground/style.css"} <= loaded
    expect(page.locator("#ready")).to_contain_text(report.generation_id)

    # a tablist: arrow keys move between tabs and show their panels; the Index tab is not there without a key
    ask, search, recs = (page.get_by_role("tab", name=n) for n in ("Ask", "Search", "Recommendations"))
    expect(ask).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("tab", name="Index")).to_be_hidden()
    ask.focus()
    page.keyboard.press("ArrowRight")
    expect(search).to_be_focused()
    expect(search).to_have_attribute("aria-selected", "true")
    expect(page.locator("#panel-search")).to_be_visible()
    expect(page.locator("#panel-ask")).to_be_hidden()
    page.keyboard.press("End")
    expect(recs).to_have_attribute("aria-selected", "true")  # the last visible tab: Index is hidden
    page.keyboard.press("ArrowRight")
    expect(ask).to_have_attribute("aria-selected", "true")  # wraps around
    page.keyboard.press("ArrowLeft")
    expect(recs).to_be_focused()


def test_phone_width_has_no_horizontal_scrolling(server, browser):
    base, _, _ = server
    context = browser.new_context(viewport={"width": 375, "height": 740}, base_url=base)
    page = context.new_page()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(base + "/")
    page.wait_for_selector("body[data-ready=true]")
    for name in ("Ask", "Search", "Recommendations"):
        page.get_by_role("tab", name=name).click()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{name}: the page is {width}px wide at a 375px viewport"
        page.screenshot(path=str(SCREENSHOTS / f"phone-{name.lower()}.png"))
    context.close()


def test_errors_show_the_api_message_and_field_and_the_key_stays_in_session_storage(tab):
    expect = _expect()
    tab.open(key=None)
    page = tab.page
    tab.tab("Search")
    page.get_by_label("Query").fill("ETF expense ratio")
    page.get_by_role("button", name="Search all three modes").click()
    error = page.locator("#search-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("401 unauthorized: missing API key")

    tab.use_key(READER_KEY)
    assert page.evaluate("sessionStorage.getItem('rag-playground.api-key')") == READER_KEY
    page.locator("#panel-search details.more-filters summary").click()
    page.locator("#search-top-k").fill("99")  # the API allows 1..50
    page.get_by_role("button", name="Search all three modes").click()
    expect(error).to_contain_text("(field: top_k)")
    expect(error).to_contain_text("400 validation_error")
    expect(page.locator("#search-top-k")).to_have_attribute("aria-invalid", "true")

    page.reload()  # same tab session: the key is still there and still used
    page.wait_for_selector("body[data-ready=true]")
    expect(page.get_by_label("API key")).to_have_value(READER_KEY)
    page.get_by_role("button", name="Forget").click()
    assert page.evaluate("sessionStorage.getItem('rag-playground.api-key')") is None


def test_index_tab_only_with_an_admin_key(tab, server):
    expect = _expect()
    _, report, _ = server
    tab.open(key=None)
    page = tab.page
    index = page.get_by_role("tab", name="Index")
    expect(index).to_be_hidden()
    tab.use_key(READER_KEY)
    expect(page.locator("#key-status")).to_contain_text("Reader key")
    expect(index).to_be_hidden()
    tab.use_key(ADMIN_KEY)
    expect(index).to_be_visible()
    index.click()
    row = page.locator("#gens tbody tr.published")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(report.generation_id)
    expect(row).to_contain_text("published")
    expect(row.locator("td").nth(3)).to_contain_text(str(report.documents))  # the documents column
    page.get_by_role("button", name="Forget").click()
    expect(index).to_be_hidden()
    expect(page.get_by_role("tab", name="Ask")).to_have_attribute("aria-selected", "true")


# --- ask ----------------------------------------------------------------------------------------------------

def _ask(tab, question: str, state: str):
    expect = _expect()
    page = tab.page
    page.get_by_label("Question").fill(question)
    page.get_by_role("button", name="Ask", exact=True).click()
    result = page.locator("#ask-result")
    expect(result).to_have_attribute("data-state", re.compile(r"^(?!streaming$)."))  # the stream has ended
    assert result.get_attribute("data-state") == state, page.locator("#ask-error").text_content()
    stream = [r for r in tab.responses if r.url.endswith("/v1/ask")]
    assert stream and stream[-1].headers["content-type"].startswith("text/event-stream")
    events = page.locator("#ask-events-list li").evaluate_all("els => els.map(e => e.dataset.event)")
    assert events[0] == "retrieval" and events[-1] == "done" and "token" in events, events
    return page.locator("#ask-answer")


def _detail(page, name: str):
    return page.locator(f"#ask-meta dt:text-is('{name}') + dd")


def test_ask_streams_an_answer_and_a_citation_opens_its_passage(tab, server):
    expect = _expect()
    _, report, _ = server
    tab.open()
    page = tab.page
    answer = _ask(tab, "How should blood pressure be measured at home?", "answered")
    streamed = page.locator("#ask-events-list li[data-event=token]").first.text_content()
    assert len(answer.inner_text().strip()) > 20
    assert re.search(r"[A-Za-z]{3}", streamed), streamed  # the token event carried the text that is shown
    expect(_detail(page, "Backend")).to_have_text("extractive")
    expect(_detail(page, "Generation")).to_have_text(report.generation_id)
    expect(page.locator("#ask-abstained")).to_be_hidden()

    cite = answer.locator("button.cite").first
    expect(cite).to_be_visible()
    n = cite.get_attribute("data-n")
    cite.focus()
    page.keyboard.press("Enter")  # a real button: the keyboard opens it
    panel = page.locator("#ask-cited")
    expect(panel).to_be_visible()
    expect(panel).to_be_focused()
    expect(cite).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#ask-cited-heading")).to_contain_text(f"[{n}]")
    expect(page.locator("#ask-cited-meta")).to_contain_text("med-hypertension")
    marked = panel.locator("mark")
    expect(marked.first).to_be_visible()
    span = marked.first.inner_text()
    assert len(span) > 10 and span in page.locator("#ask-cited-text").inner_text()
    tab.shot("ask-citation", "#ask-cited")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(cite).to_be_focused()  # focus goes back to the citation that opened it

    # each [n] outlines the span behind its own sentence (extractive sentences are the passage's own words)
    for button in answer.locator("button.cite").all():
        claim = " ".join(button.get_attribute("data-claim").split())
        button.click()
        current = panel.locator("mark.current")
        expect(current).to_have_count(1)
        assert claim[:25] in " ".join(current.inner_text().split()), (claim, current.inner_text())
        page.locator("#ask-cited-close").click()


def test_ask_in_chinese(tab):
    expect = _expect()
    tab.open()
    page = tab.page
    answer = _ask(tab, "高血压患者应该什么时候测量血压？", "answered")
    expect(answer).to_have_attribute("lang", "zh")
    assert re.search(r"[\u4e00-\u9fff]{4}", answer.inner_text()), answer.inner_text()
    answer.locator("button.cite").first.click()
    expect(page.locator("#ask-cited-meta")).to_contain_text("med-hypertension-zh")
    expect(page.locator("#ask-cited mark").first).to_be_visible()


def test_ask_out_of_corpus_abstains_and_shows_the_closest_passages(tab):
    expect = _expect()
    tab.open()
    page = tab.page
    answer = _ask(tab, "Who won the 1998 World Cup?", "abstained")
    expect(page.locator("#ask-abstained")).to_be_visible()
    expect(answer.locator("button.cite")).to_have_count(0)
    expect(page.locator("#ask-passages-heading")).to_contain_text("Closest passages")
    assert page.locator("#ask-passages li").count() >= 1
    expect(_detail(page, "Abstained")).to_have_text("yes")


# --- search -------------------------------------------------------------------------------------------------

def test_search_shows_three_modes_side_by_side_with_leg_ranks(tab):
    expect = _expect()
    tab.open()
    page = tab.page
    tab.tab("Search")
    page.get_by_label("Query").fill("ETF expense ratio")
    page.get_by_role("button", name="Search all three modes").click()
    modes = {m: page.locator(f"#search-results .mode[data-mode={m}]") for m in ("dense", "keyword", "hybrid")}
    for section in modes.values():
        expect(section).to_have_attribute("data-state", "done")
    posts = [json.loads(r.request.post_data) for r in tab.responses if r.url.endswith("/v1/search")]
    assert sorted(p["mode"] for p in posts) == ["dense", "hybrid", "keyword"]
    for mode, section in modes.items():
        first = section.locator(".hit").first
        expect(first).to_contain_text("fin-etf")
    # each leg ranks its own list; hybrid shows both legs' ranks for its top hit
    expect(modes["dense"].locator(".hit").first.locator(".legs")).to_contain_text("dense #1")
    expect(modes["dense"].locator(".legs").first).not_to_contain_text("keyword")  # only the legs that ran
    expect(modes["keyword"].locator(".hit").first.locator(".legs")).to_contain_text("keyword #1")
    hybrid_legs = modes["hybrid"].locator(".hit").first.locator(".legs").inner_text()
    assert re.search(r"dense\s+#\d", hybrid_legs) and re.search(r"keyword\s+#\d", hybrid_legs), hybrid_legs
    expect(modes["hybrid"].locator(".hit").first.locator(".chips")).to_contain_text("finance")
    tab.shot("search", "#search-results", max_height=1000)

    # a filter applies to all three
    page.locator("#search-domain").select_option("medical")
    page.get_by_label("Query").fill("vaccines")
    page.get_by_role("button", name="Search all three modes").click()
    for section in modes.values():
        expect(section.locator(".hit").first).to_contain_text("med-")
    chips = page.locator("#search-results .hit .chips li:first-child").all_inner_texts()
    assert chips and {c.split(":")[-1].strip() for c in chips} == {"medical"}, chips

    # one hit per document: each mode lists distinct documents
    tab.responses.clear()
    page.get_by_label("One hit per document (its best passage)").check()
    page.get_by_role("button", name="Search all three modes").click()
    for section in modes.values():
        expect(section).to_have_attribute("data-state", "done")
    posts = [json.loads(r.request.post_data) for r in tab.responses if r.url.endswith("/v1/search")]
    assert len(posts) == 3 and all(p["results"] == "documents" for p in posts), posts
    for mode, section in modes.items():
        ids = [t.split(" · ")[0] for t in section.locator(".hit .meta code").all_inner_texts()]
        assert ids and len(ids) == len(set(ids)), (mode, ids)
        if mode != "keyword":  # only one medical document holds the word "vaccines"
            assert len(ids) >= 2, (mode, ids)


# --- recommendations ----------------------------------------------------------------------------------------

def _rec_ids(page) -> list[str]:
    return page.locator("#recs-list li.item").evaluate_all("els => els.map(e => e.dataset.docId)")


def test_recommendations_change_after_a_dismiss(tab):
    expect = _expect()
    tab.open()
    page = tab.page
    tab.tab("Recommendations")
    page.get_by_label("User id").fill("u-pw-fin")
    page.get_by_label("How many").fill("4")
    page.get_by_role("button", name="Recommend", exact=True).click()
    expect(page.locator("#recs-list li.item").first).to_be_visible()
    before = _rec_ids(page)
    assert before and "fin-etf" not in before  # liked: seen, so not recommended again
    expect(page.locator("#recs-meta")).to_contain_text("u-pw-fin")
    assert page.locator("#recs-list li.item .reason").count() >= 1

    first = page.locator("#recs-list li.item").first
    title = first.locator("h3").inner_text()
    first.get_by_role("button", name=f"Dismiss {title}").click()
    expect(page.locator("#recs-status")).to_contain_text("Dismissed")
    after = _rec_ids(page)
    assert before[0] not in after and after != before
    events = [json.loads(r.request.post_data) for r in tab.responses if r.url.endswith("/v1/events")]
    assert events == [{"events": [{"user_id": "u-pw-fin", "doc_id": before[0], "type": "dismiss"}]}]

    # more like this, trending, and blurbs
    page.locator("#recs-list li.item").first.get_by_role("button", name=re.compile("^More like")).click()
    expect(page.locator("#similar-list li.item").first).to_be_visible()
    expect(page.locator("#similar-meta")).to_contain_text(after[0])
    assert after[0] not in page.locator("#similar-list li.item").evaluate_all("els => els.map(e => e.dataset.docId)")
    page.locator("#trending-domain").select_option("medical")
    page.get_by_role("button", name="Show trending").click()
    expect(page.locator("#trending-list li.item").first).to_be_visible()
    domains = page.locator("#trending-list li.item .chip").all_inner_texts()
    assert domains and set(domains) == {"medical"}, domains
    page.get_by_label("Blurbs").check()
    page.get_by_role("button", name="Recommend", exact=True).click()
    expect(page.locator("#recs-list li.item .blurb").first).to_be_visible()
    tab.shot("recommendations", "#panel-recs")


# --- index (admin) ------------------------------------------------------------------------------------------

def test_rebuild_with_progress_then_roll_back(tab, server):
    expect = _expect()
    _, report, _ = server
    tab.open(key=ADMIN_KEY)
    page = tab.page
    tab.tab("Index")
    expect(page.locator("#gens tbody tr")).to_have_count(1)
    page.get_by_label("Force").check()
    page.get_by_role("button", name="Rebuild the index").click()
    expect(page.locator("#job")).to_have_attribute("data-state", "succeeded", timeout=300_000)
    expect(page.locator("#job-text")).to_contain_text("published")
    polls = [r for r in tab.responses if "/v1/admin/jobs/" in r.url]
    assert len(polls) >= 1
    expect(page.locator("#gens tbody tr")).to_have_count(2)
    published = page.locator("#gens tbody tr.published")
    expect(published).not_to_contain_text(report.generation_id)
    old = page.locator(f"#gens tbody tr[data-id='{report.generation_id}']")
    old.get_by_role("button", name=re.compile("^Publish")).click()
    expect(page.locator("#index-status")).to_contain_text(f"Published {report.generation_id}")
    expect(page.locator("#gens tbody tr.published")).to_contain_text(report.generation_id)
    tab.shot("index", "#panel-index")


# --- access -------------------------------------------------------------------------------------------------

HIDDEN_TEXT = (HIDDEN_ID, "every four hours", "180/110")  # its id and words of it that no question below holds


def _api_bodies(tab) -> str:
    """Every API response body the page received, joined (the SSE stream included, once it has ended)."""
    bodies = []
    for r in tab.responses:
        if "/v1/" in r.url:
            try:
                bodies.append(r.text())
            except Exception:  # noqa: BLE001 - a response without a body (a redirect, an aborted stream)
                continue
    return "\n".join(bodies)


def test_the_playground_never_shows_a_document_the_key_may_not_see(tab):
    expect = _expect()
    tab.open(key=READER_KEY)
    page = tab.page
    # search, all three modes
    tab.tab("Search")
    page.get_by_label("Query").fill(f"{HIDDEN_MARK} ward blood pressure protocol")
    page.get_by_role("button", name="Search all three modes").click()
    for mode in ("dense", "keyword", "hybrid"):
        expect(page.locator(f"#search-results .mode[data-mode={mode}]")).to_have_attribute("data-state", "done")
    # an answer and its passages
    tab.tab("Ask")
    _ask(tab, f"How often is blood pressure measured on the {HIDDEN_MARK} ward?", "abstained")
    # recommendations and trending for users whose events include the hidden document
    tab.tab("Recommendations")
    for user in ("u-pw-med", "u-pw-fin"):
        page.get_by_label("User id").fill(user)
        page.get_by_role("button", name="Recommend", exact=True).click()
        expect(page.locator("#recs-meta")).to_contain_text(user)
        expect(page.locator("#recs-list li.item").first).to_be_visible()
    page.locator("#trending-domain").select_option("medical")
    page.get_by_role("button", name="Show trending").click()
    expect(page.locator("#trending-list li.item").first).to_be_visible()

    shown = page.locator("main").inner_text()
    received = _api_bodies(tab)
    assert received.count('"doc_id"') >= 5  # the page did receive documents
    for text in HIDDEN_TEXT:
        assert text not in shown, f"{text!r} shown to a public reader"
        assert text not in received, f"{text!r} sent to a public reader"

    # the clinicians' key sees it, on the same page
    tab.use_key(CLINIC_KEY)
    tab.tab("Search")
    page.get_by_role("button", name="Search all three modes").click()
    hybrid = page.locator("#search-results .mode[data-mode=hybrid]")
    expect(hybrid).to_have_attribute("data-state", "done")
    expect(hybrid.locator(".hit").first).to_contain_text(HIDDEN_ID)
