"""Turn source files into `Document`s: Markdown, text, HTML, PDF, JSONL, CSV and BEIR corpora.

A source is a file or a folder (walked recursively in sorted order). Metadata comes, weakest first, from
defaults (path-derived id, file-name title, detected language), then the file itself (front matter, <meta>
tags, columns), then a sidecar `<file>.meta.json|yaml` next to it. One bad file or row never stops a load: it is
reported as a `SkippedSource` and the rest goes on.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import sys
import unicodedata
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import frontmatter
import yaml
from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import PreformattedString
from pypdf import PdfReader
from tqdm import tqdm

from rag.access import MalformedAccess, parse_access
from rag.text import detect_language
from rag.types import DOMAINS, Document, SkippedSource

FORMATS = {".md": "md", ".markdown": "md", ".txt": "txt", ".html": "html", ".htm": "html", ".pdf": "pdf",
           ".jsonl": "jsonl", ".csv": "csv"}
SIDECAR_SUFFIXES = (".meta.json", ".meta.yaml", ".meta.yml")
# A folder holding both is a BEIR dataset: only its corpus is documents (queries and qrels are evaluation data).
BEIR_CORPUS, BEIR_QUERIES = "corpus.jsonl", "queries.jsonl"


@dataclass
class LoaderOptions:
    """How tabular sources (JSONL, CSV) map columns to documents, and defaults for every source."""

    id_field: str = "id"
    title_field: str = "title"
    # Joined with blank lines. When none exists but "question" and "answer" do (an FAQ), those are used.
    text_fields: tuple[str, ...] = ("text",)
    metadata_fields: tuple[str, ...] = ("domain", "tags", "audience", "language", "date", "source", "access")
    default_domain: str | None = None


@dataclass
class LoadResult:
    documents: list[Document]
    skipped: list[SkippedSource]
    files_seen: int


class SourceError(Exception):
    """A file or row that cannot become a document; the message is the reason reported."""


@dataclass(frozen=True)
class _SourceFile:
    path: Path
    root: Path  # the folder that path-derived ids are relative to


@dataclass
class _Draft:
    """What a format parser extracted, before metadata is resolved into a Document."""

    text: str
    meta: dict[str, Any]
    fmt: str
    default_id: str
    fallback_title: str = ""
    line: int | None = None  # set for one row of a JSONL/CSV file


def load_sources(sources: Sequence[str | Path], options: LoaderOptions | None = None, *,
                 progress: bool = False) -> LoadResult:
    """Load every document under `sources`. Raises FileNotFoundError only for a source that does not exist."""
    options = options or LoaderOptions()
    files, skipped = _collect(sources, options)
    files_seen = len(files) + len(skipped)  # skipped so far: files named explicitly with an unknown type
    documents: list[Document] = []
    first_seen: dict[str, str] = {}  # doc_id -> where it came from
    for sf in tqdm(files, desc="load", unit="file", file=sys.stderr, disable=not progress):
        try:
            docs, row_skips = _load_file(sf, options)
        except SourceError as e:
            skipped.append(SkippedSource(str(sf.path), str(e)))
            continue
        except Exception as e:  # noqa: BLE001 - one malformed file must not abort a build over thousands
            skipped.append(SkippedSource(str(sf.path), f"cannot load ({type(e).__name__}: {_one_line(e)})"))
            continue
        skipped.extend(row_skips)
        for doc, line in docs:
            where = str(sf.path) if line is None else f"{sf.path}:line {line}"
            if doc.doc_id in first_seen:
                reason = f"duplicate id {doc.doc_id} (first seen in {first_seen[doc.doc_id]})"
                skipped.append(SkippedSource(str(sf.path), _at_row(sf.path, line, reason)))
                continue
            first_seen[doc.doc_id] = where
            documents.append(doc)
    return LoadResult(documents=documents, skipped=skipped, files_seen=files_seen)


# --- finding files ---------------------------------------------------------------------------------------

def _collect(sources: Sequence[str | Path], options: LoaderOptions) -> tuple[list[_SourceFile],
                                                                              list[SkippedSource]]:
    files: list[_SourceFile] = []
    skipped: list[SkippedSource] = []
    for src in sources:
        path = Path(src)
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "source not found", str(path))
        if path.is_dir():
            files.extend(_walk(path, options))
        elif path.suffix.lower() in FORMATS:
            files.append(_SourceFile(path, path.parent))
        else:
            kind = path.suffix.lower() or "(no extension)"
            skipped.append(SkippedSource(str(path), f"unsupported file type {kind}"))
    return files, skipped


def _walk(root: Path, options: LoaderOptions) -> Iterator[_SourceFile]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        if BEIR_CORPUS in filenames and BEIR_QUERIES in filenames:
            dirnames[:] = []
            yield _SourceFile(here / BEIR_CORPUS, root)
            continue
        for name in sorted(filenames):
            if _is_document_file(here / name, options):
                yield _SourceFile(here / name, root)


def _is_document_file(path: Path, options: LoaderOptions) -> bool:
    """Whether a file met while walking a folder is a document (folders also hold READMEs, code, user data)."""
    name = path.name.lower()
    if name.startswith(".") or name.endswith(SIDECAR_SUFFIXES) or name == "readme.md":
        return False
    fmt = FORMATS.get(path.suffix.lower())
    if fmt in ("jsonl", "csv"):
        return _has_document_rows(path, fmt, options)
    return fmt is not None


def _has_document_rows(path: Path, fmt: str, options: LoaderOptions) -> bool:
    """Sniff the header or first row: users.jsonl or events.jsonl next to the documents have no text column."""
    try:
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
            if fmt == "csv":
                columns: Collection[str] = [c.strip() for c in next(csv.reader(f), [])]
            else:
                row = json.loads(next((line for line in f if line.strip()), "{}"))
                columns = row if isinstance(row, dict) else {}
    except (OSError, ValueError, csv.Error):
        return True  # unreadable: let the loader report why
    return _is_beir_row(columns) or _text_fields(columns, options) is not None


# --- one file ----------------------------------------------------------------------------------------------

def _load_file(sf: _SourceFile, options: LoaderOptions) -> tuple[list[tuple[Document, int | None]],
                                                                 list[SkippedSource]]:
    fmt = FORMATS[sf.path.suffix.lower()]
    sidecar = _read_sidecar(sf.path)
    default_id = sf.path.relative_to(sf.root).with_suffix("").as_posix()
    folder_domain = _folder_domain(sf.path, sf.root)
    docs: list[tuple[Document, int | None]] = []
    skipped: list[SkippedSource] = []
    for item in _PARSERS[fmt](sf.path, options, default_id):
        if isinstance(item, SkippedSource):
            skipped.append(item)
            continue
        try:
            docs.append((_to_document(item, sidecar, sf.path, folder_domain, options), item.line))
        except SourceError as e:
            if item.line is None:
                raise
            skipped.append(SkippedSource(str(sf.path), _at_row(sf.path, item.line, str(e))))
    return docs, skipped


def _to_document(draft: _Draft, sidecar: dict[str, Any], path: Path, folder_domain: str | None,
                 options: LoaderOptions) -> Document:
    if draft.line is not None:
        # A file-level sidecar describes all rows; it cannot give them all one id or title.
        sidecar = {k: v for k, v in sidecar.items() if k not in ("id", "title")}
    meta = {**draft.meta, **sidecar}
    text = normalize_text(draft.text)
    if not text:
        raise SourceError("empty text")
    date_iso, date_raw = _iso_date(meta.pop("date", None))
    if date_raw is not None:
        meta["date_raw"] = date_raw
    domain = _clean_str(meta.pop("domain", None))
    language = _language(meta.pop("language", None))
    try:
        access = parse_access(meta.pop("access", None))
    except MalformedAccess as e:  # the document is skipped: indexed as public it would show to everyone
        raise SourceError(f"malformed access: {e}") from e
    doc = Document(
        doc_id=_clean_str(meta.pop("id", None)) or draft.default_id,
        text=text,
        title=normalize_text(_clean_str(meta.pop("title", None)) or draft.fallback_title),
        domain=domain.lower() if domain else folder_domain or options.default_domain,
        tags=_tags(meta.pop("tags", None)),
        audience=_clean_str(meta.pop("audience", None)),
        language=language or detect_language(text),
        date=date_iso,
        source=_clean_str(meta.pop("source", None)) or str(path),
        format=draft.fmt,
        access=access,
    )
    meta.setdefault("path", str(path))  # `source` may be an attribution; keep where the file is
    doc.metadata = _json_safe(meta)
    return doc


def _read_sidecar(path: Path) -> dict[str, Any]:
    """`<name>.<ext>.meta.json|yaml`, or `<name>.meta.json|yaml`; the first that exists."""
    candidates = [path.with_name(path.name + s) for s in SIDECAR_SUFFIXES]
    candidates += [path.with_name(path.stem + s) for s in SIDECAR_SUFFIXES]
    for sidecar in candidates:
        if not sidecar.is_file():
            continue
        try:
            raw = sidecar.read_text(encoding="utf-8-sig")
            data = json.loads(raw) if sidecar.suffix == ".json" else yaml.safe_load(raw)
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise SourceError(f"broken sidecar {sidecar.name}: {_one_line(e)}") from e
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise SourceError(f"broken sidecar {sidecar.name}: expected a mapping")
        return data
    return {}


def _folder_domain(path: Path, root: Path) -> str | None:
    """`finance/budgeting.md` is finance unless it says otherwise: the nearest folder named after a domain."""
    for part in reversed(path.relative_to(root).parent.parts):
        if part.lower() in DOMAINS:
            return part.lower()
    return None


# --- formats -----------------------------------------------------------------------------------------------

def _parse_markdown(path: Path, options: LoaderOptions, default_id: str) -> list[_Draft]:
    meta, body = _split_front_matter(_read_utf8(path))
    title = _first_h1(body) or _title_from_name(path)
    return [_Draft(body, meta, "md", default_id, title)]


def _parse_text(path: Path, options: LoaderOptions, default_id: str) -> list[_Draft]:
    return [_Draft(_read_utf8(path), {}, "txt", default_id, _title_from_name(path))]


def _split_front_matter(raw: str) -> tuple[dict[str, Any], str]:
    handler = frontmatter.YAMLHandler()
    raw = raw.replace("\r\n", "\n")
    if not handler.detect(raw):
        return {}, raw
    try:
        fm, body = handler.split(raw)
    except ValueError as e:
        raise SourceError("broken front matter: no closing ---") from e
    try:
        meta = handler.load(fm)
    except yaml.YAMLError as e:
        raise SourceError(f"broken front matter: {_one_line(e)}") from e
    if meta is None:
        return {}, body
    if not isinstance(meta, dict):
        raise SourceError("broken front matter: expected a mapping of keys to values")
    return meta, body


_H1 = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def _first_h1(markdown: str) -> str:
    m = _H1.search(markdown)
    return m.group(1).strip() if m else ""


def _title_from_name(path: Path) -> str:
    words = re.sub(r"[-_]+", " ", path.stem).strip()
    return words[:1].upper() + words[1:]


# HTML ------------------------------------------------------------------------------------------------------

_HTML_DROPPED = ["script", "style", "nav", "noscript", "template", "head"]
_HTML_BLOCKS = {"p", "div", "section", "article", "main", "header", "footer", "aside", "blockquote", "figure",
                "figcaption", "body", "html", "dl", "dt", "dd", "address", "details", "summary", "form"}
_HTML_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_HTML_IGNORED_META = {"viewport", "robots", "generator", "referrer", "theme-color", "color-scheme"}


def _parse_html(path: Path, options: LoaderOptions, default_id: str) -> list[_Draft]:
    soup = BeautifulSoup(path.read_bytes(), "lxml")
    meta: dict[str, Any] = {}
    for tag in soup.find_all("meta", attrs={"name": True, "content": True}):
        name = tag["name"].strip().lower()
        if name not in _HTML_IGNORED_META:
            meta[name] = tag["content"]
    if "language" not in meta and soup.html is not None and soup.html.get("lang"):
        meta["language"] = soup.html["lang"]
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if not title and (h1 := soup.find("h1")):
        title = _inline_text(h1)
    for tag in soup(_HTML_DROPPED):
        tag.decompose()
    blocks: list[str] = []
    _html_blocks(soup.body or soup, blocks)
    return [_Draft("\n\n".join(blocks), meta, "html", default_id, title or _title_from_name(path))]


def _html_blocks(node: Tag, out: list[str]) -> None:
    """Render `node` as Markdown-ish blocks: `#` headings, `-` lists, pipe tables, paragraphs."""
    inline: list[str] = []

    def flush() -> None:
        text = " ".join("".join(inline).split())
        inline.clear()
        if text:
            out.append(text)

    for child in node.children:
        if isinstance(child, PreformattedString):  # comments, doctype, CDATA
            continue
        if isinstance(child, NavigableString):
            inline.append(str(child))
            continue
        name = child.name
        if name in _HTML_HEADINGS:
            flush()
            if text := _inline_text(child):
                out.append("#" * int(name[1]) + " " + text)
        elif name == "table":
            flush()
            if caption := child.find("caption"):
                out.append(_inline_text(caption))
            if table := _html_table(child):
                out.append(table)
        elif name in ("ul", "ol"):
            flush()
            if lines := _html_list(child, 0):
                out.append("\n".join(lines))
        elif name == "pre":
            flush()
            out.append(child.get_text().strip("\n"))
        elif name == "br":
            inline.append(" ")
        elif name in _HTML_BLOCKS:
            flush()
            _html_blocks(child, out)
        else:
            inline.append(child.get_text())
    flush()


def _inline_text(tag: Tag) -> str:
    return " ".join(tag.get_text(" ").split())


def _html_list(list_tag: Tag, depth: int) -> list[str]:
    lines = []
    for i, item in enumerate(list_tag.find_all("li", recursive=False), 1):
        marker = f"{i}." if list_tag.name == "ol" else "-"
        own = " ".join(" ".join(c.get_text(" ") if isinstance(c, Tag) else str(c)
                                for c in item.children if not (isinstance(c, Tag) and c.name in ("ul", "ol"))
                                ).split())
        if own:
            lines.append("  " * depth + f"{marker} {own}")
        for nested in item.find_all(["ul", "ol"], recursive=False):
            lines.extend(_html_list(nested, depth + 1))
    return lines


def _html_table(table: Tag) -> str:
    """A pipe table; the first row is the header (Markdown needs one), colspans become empty cells."""
    rows: list[list[str]] = []
    for tr in table.find_all("tr"):
        if tr.find_parent("table") is not table:  # a table nested in a cell stays inside that cell's text
            continue
        cells: list[str] = []
        for cell in tr.find_all(["th", "td"], recursive=False):
            cells.append(_inline_text(cell).replace("|", "\\|"))
            span = str(cell.get("colspan", "1")).strip()
            cells.extend([""] * (int(span) - 1 if span.isdigit() and int(span) > 1 else 0))
        if any(cells):
            rows.append(cells)
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    lines = ["| " + " | ".join(r + [""] * (width - len(r))) + " |" for r in rows]
    lines.insert(1, "|" + " --- |" * width)
    return "\n".join(lines)


# PDF -------------------------------------------------------------------------------------------------------

def _parse_pdf(path: Path, options: LoaderOptions, default_id: str) -> list[_Draft]:
    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise SourceError("encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
        title = (reader.metadata.title if reader.metadata else None) or ""
    except SourceError:
        raise
    except Exception as e:  # noqa: BLE001 - pypdf raises many types on corrupt files
        raise SourceError(f"unreadable PDF ({type(e).__name__}: {_one_line(e)})") from e
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise SourceError("PDF has no extractable text (scanned images?)")
    return [_Draft(text, {}, "pdf", default_id, str(title).strip() or _title_from_name(path))]


# JSONL, CSV, BEIR ------------------------------------------------------------------------------------------

def _parse_jsonl(path: Path, options: LoaderOptions, default_id: str) -> Iterator[_Draft | SkippedSource]:
    fields: tuple[str, ...] | None = None
    beir = False
    n = 0
    for line_no, line in enumerate(_read_utf8(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield SkippedSource(str(path), _at_row(path, line_no, f"invalid JSON ({e.msg})"))
            continue
        if not isinstance(row, dict):
            yield SkippedSource(str(path), _at_row(path, line_no, "expected a JSON object"))
            continue
        if fields is None:  # the first row decides the layout of the file
            beir = _is_beir_row(row)
            fields = ("text",) if beir else _require_text_fields(row, options)
        n += 1
        if beir:
            yield _beir_draft(row, line_no)
        else:
            yield _row_draft(row, fields, options, f"{default_id}-{n}", "jsonl", line_no)


def _parse_csv(path: Path, options: LoaderOptions, default_id: str) -> Iterator[_Draft | SkippedSource]:
    reader = csv.reader(io.StringIO(_read_utf8(path), newline=""))
    header = [c.strip() for c in next(reader, [])]
    if not header:
        raise SourceError("empty CSV")
    fields = _require_text_fields(header, options)
    n = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield SkippedSource(str(path), _at_row(path, reader.line_num, f"malformed CSV ({e})"))
            continue
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            reason = f"expected {len(header)} fields, got {len(values)}"
            yield SkippedSource(str(path), _at_row(path, reader.line_num, reason))
            continue
        n += 1
        yield _row_draft(dict(zip(header, values)), fields, options, f"{default_id}-{n}", "csv", reader.line_num)


def _is_beir_row(row: Collection[str]) -> bool:
    return "_id" in row and "text" in row


def _text_fields(columns: Collection[str], options: LoaderOptions) -> tuple[str, ...] | None:
    if any(f in columns for f in options.text_fields):
        return options.text_fields
    if "question" in columns and "answer" in columns:
        return ("question", "answer")
    return None


def _require_text_fields(columns: Collection[str], options: LoaderOptions) -> tuple[str, ...]:
    fields = _text_fields(columns, options)
    if fields is None:
        wanted = ", ".join(options.text_fields)
        raise SourceError(f"no text column (expected {wanted}, or question and answer)")
    return fields


def _row_draft(row: dict[str, Any], fields: tuple[str, ...], options: LoaderOptions, default_id: str,
               fmt: str, line: int) -> _Draft:
    meta = {k: row[k] for k in options.metadata_fields if row.get(k) not in (None, "")}
    meta["id"] = row.get(options.id_field)
    meta["title"] = row.get(options.title_field)
    text = "\n\n".join(str(row[f]).strip() for f in fields if row.get(f) not in (None, ""))
    # An FAQ row has no title column: its question is the natural title.
    fallback = str(row.get("question") or "") if fields == ("question", "answer") else ""
    return _Draft(text, meta, fmt, default_id, fallback, line)


def _beir_draft(row: dict[str, Any], line: int) -> _Draft:
    extra = row.get("metadata")
    meta = dict(extra) if isinstance(extra, dict) else {}
    meta["id"] = row["_id"]
    meta["title"] = row.get("title")
    return _Draft(str(row.get("text") or ""), meta, "beir", str(row["_id"]), "", line)


_PARSERS = {"md": _parse_markdown, "txt": _parse_text, "html": _parse_html, "pdf": _parse_pdf,
            "jsonl": _parse_jsonl, "csv": _parse_csv}


# --- values ------------------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\ufeff]")
_BLANK_RUN = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """NFC, LF line ends, no BOM or control characters, no trailing spaces, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x0b", "\n").replace("\x0c", "\n")
    text = _CONTROL.sub("", unicodedata.normalize("NFC", text))
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_RUN.sub("\n\n", text).strip()


def _read_utf8(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SourceError(f"cannot read ({e.strerror})") from e
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SourceError(f"not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from e


def _clean_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    return str(value).strip() or None


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        items = re.split(r"[,;]", value)
    elif isinstance(value, (list, tuple, set)):
        items = [str(v) for v in value]
    else:
        items = [str(value)]
    out: list[str] = []
    for tag in (t.strip() for t in items):
        if tag and tag not in out:
            out.append(tag)
    return out


_LANGUAGE_NAMES = {"english": "en", "chinese": "zh", "中文": "zh", "英文": "en"}


def _language(value: Any) -> str | None:
    """ISO 639-1 from "en", "en-US", "zh_Hans", "English"..."""
    s = _clean_str(value)
    if not s:
        return None
    s = s.lower()
    return _LANGUAGE_NAMES.get(s) or re.split(r"[-_]", s)[0]


_ISO_LIKE = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[T ].*)?")


def _iso_date(value: Any) -> tuple[str | None, str | None]:
    """(ISO date, raw value kept when it could not be read)."""
    if value is None or value == "":
        return None, None
    if isinstance(value, datetime):
        return value.date().isoformat(), None
    if isinstance(value, date):
        return value.isoformat(), None
    m = _ISO_LIKE.fullmatch(str(value).strip())
    if m:
        try:
            return date(int(m[1]), int(m[2]), int(m[3])).isoformat(), None
        except ValueError:
            pass
    return None, str(value)


def _json_safe(value: Any) -> Any:
    """Metadata is stored as JSON downstream: YAML dates and other objects become strings."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _at_row(path: Path, line: int | None, reason: str) -> str:
    return reason if line is None else f"{path.name}:line {line}: {reason}"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
