"""PII redaction on ingest: typed placeholders replace personal data before a document is chunked.

A build redacts the documents `privacy` selects (by domain, "medical" by default, or by source path) right after
loading, so the original text never reaches a chunk, a vector, the keyword index or the stored document text
(DESIGN decision 9). What is found, in this order (each later kind only sees what the earlier ones left):

    [EMAIL]  e-mail addresses
    [IBAN]   IBANs whose mod-97 check digits hold (python-stdnum)
    [CN_ID]  Chinese resident identity numbers, 18 characters, with a valid birth date and check character
    [CARD]   payment card numbers of 13-19 digits (spaces or dashes allowed) passing the Luhn check
    [SSN]    US social security numbers written 123-45-6789 (or with spaces) in the allowed ranges
    [PHONE]  phone numbers libphonenumber (phonenumbers) finds and validates: international (+44 20 ...) and the
             national formats of `privacy.phone_regions` (US, CN mobiles 138 0013 8000, ...)

Checksums and libphonenumber's validation keep prices, dates, dosages, ranges (130/80) and ordinary figures
as they are. Person names are not redacted: no well-kept library finds them offline without a model download
(spaCy's pipelines are not on PyPI).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.cn import ric
from stdnum.us import ssn as stdnum_ssn

from rag.config import PrivacySettings
from rag.types import Document

PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "ssn": "[SSN]", "cn_id": "[CN_ID]",
                "iban": "[IBAN]"}
ORDER = ("email", "iban", "cn_id", "card", "ssn", "phone")

# Not inside a longer run of letters or digits (Chinese text has no word boundaries around numbers, so \b
# would miss 手机13800138000).
_NO_ALNUM_BEFORE = r"(?<![A-Za-z0-9])"
_NO_ALNUM_AFTER = r"(?![A-Za-z0-9])"
_EMAIL = re.compile(_NO_ALNUM_BEFORE.replace("A-Za-z0-9", "A-Za-z0-9._%+-")
                    + r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}" + _NO_ALNUM_AFTER)
_IBAN = re.compile(_NO_ALNUM_BEFORE + r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?" + _NO_ALNUM_AFTER)
_CN_ID = re.compile(r"(?<!\d)\d{17}[\dXx](?![\dA-Za-z])")
_CARD = re.compile(r"(?<![\d.,])\d(?:[ -]?\d){12,18}(?![\d]|[.,]\d)")
_SSN = re.compile(r"(?<![\d-])\d{3}([- ])\d{2}\1\d{4}(?![\d-])")


def _valid_iban(s: str) -> bool:
    return stdnum_iban.is_valid(s)


def _valid_cn_id(s: str) -> bool:
    return ric.is_valid(s.upper())


def _valid_card(s: str) -> bool:
    digits = re.sub(r"[ -]", "", s)
    return 13 <= len(digits) <= 19 and luhn.is_valid(digits) and len(set(digits)) > 1


def _valid_ssn(s: str) -> bool:
    return stdnum_ssn.is_valid(s.replace(" ", "-"))


_CHECKED: dict[str, tuple[re.Pattern, Callable[[str], bool]]] = {
    "email": (_EMAIL, lambda s: True),
    "iban": (_IBAN, _valid_iban),
    "cn_id": (_CN_ID, _valid_cn_id),
    "card": (_CARD, _valid_card),
    "ssn": (_SSN, _valid_ssn),
}


def _replace_checked(text: str, kind: str, counts: Counter) -> str:
    pattern, valid = _CHECKED[kind]

    def sub(m: re.Match) -> str:
        if not valid(m.group(0)):
            return m.group(0)
        counts[kind] += 1
        return PLACEHOLDERS[kind]

    return pattern.sub(sub, text)


# Numbers that belong to organisations, not people (a poison-control hotline stays readable).
_SERVICE_NUMBERS = {phonenumbers.PhoneNumberType.TOLL_FREE, phonenumbers.PhoneNumberType.PREMIUM_RATE,
                    phonenumbers.PhoneNumberType.SHARED_COST, phonenumbers.PhoneNumberType.UAN}
_NOT_A_PHONE = re.compile(r"[/±–—]|^\D*\d+\.\d+\D*$|\d\.\d+[^\d.\s]")


def _looks_like_phone(raw: str) -> bool:
    """libphonenumber's VALID still accepts statistics (0.89-8.44, (16-83)) as short numbers of some
    regions: a phone here has 7+ digits and no slashes, range dashes or decimal points mixed with other
    separators."""
    return sum(ch.isdigit() for ch in raw) >= 7 and not _NOT_A_PHONE.search(raw)


def _replace_phones(text: str, regions: Iterable[str], counts: Counter) -> str:
    spans: list[tuple[int, int]] = []
    service: list[tuple[int, int]] = []  # read as a toll-free or other service number in any region: kept
    for region in [*regions, None]:  # None: only numbers written with a + country code
        for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
            if phonenumbers.number_type(m.number) in _SERVICE_NUMBERS:
                service.append((m.start, m.end))
            elif _looks_like_phone(m.raw_string):
                spans.append((m.start, m.end))
    spans = [(a, b) for a, b in spans if not any(a < d and c < b for c, d in service)]
    if not spans:
        return text
    merged: list[list[int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    out, at = [], 0
    for a, b in merged:
        out.append(text[at:a])
        out.append(PLACEHOLDERS["phone"])
        at = b
    out.append(text[at:])
    counts["phone"] += len(merged)
    return "".join(out)


@dataclass
class Redactor:
    kinds: tuple[str, ...] = ORDER
    phone_regions: tuple[str, ...] = ("US", "CN")

    def redact(self, text: str, counts: Counter | None = None) -> str:
        """`text` with each PII span replaced by its placeholder; `counts` (by kind) is added to."""
        counts = Counter() if counts is None else counts
        if not text:
            return text
        for kind in ORDER:
            if kind not in self.kinds:
                continue
            if kind == "phone":
                text = _replace_phones(text, self.phone_regions, counts)
            else:
                text = _replace_checked(text, kind, counts)
        return text


@dataclass
class RedactionPolicy:
    """Which documents a build redacts (`privacy` settings) and with what."""

    settings: PrivacySettings
    redactor: Redactor = field(init=False)

    def __post_init__(self):
        self.redactor = Redactor(tuple(self.settings.redact_kinds), tuple(self.settings.phone_regions))
        self._roots = [Path(p).expanduser().resolve() for p in self.settings.redact_sources]

    def applies(self, doc: Document) -> bool:
        domains = self.settings.redact_domains
        if "*" in domains or (doc.domain is not None and doc.domain in domains):
            return True
        where = doc.metadata.get("path") or doc.source
        if not self._roots or not where:
            return False
        try:
            path = Path(str(where)).resolve()
        except (OSError, ValueError):
            return False
        return any(path == root or root in path.parents for root in self._roots)

    def redact_documents(self, docs: list[Document]) -> dict[str, int]:
        """Redact the selected documents in place (title, text, string metadata); counts by kind."""
        counts: Counter = Counter()
        if not self.settings.redact_kinds:
            return {}
        for doc in docs:
            if not self.applies(doc):
                continue
            doc.title = self.redactor.redact(doc.title, counts)
            doc.text = self.redactor.redact(doc.text, counts)
            if doc.source and doc.source != doc.metadata.get("path"):  # an attribution may name a person's address
                doc.source = self.redactor.redact(doc.source, counts)
            doc.metadata = {k: (v if k == "path" else _redact_value(v, self.redactor, counts))
                            for k, v in doc.metadata.items()}
        return {kind: counts[kind] for kind in ORDER if counts[kind]}


def _redact_value(value: Any, redactor: Redactor, counts: Counter) -> Any:
    if isinstance(value, str):
        return redactor.redact(value, counts)
    if isinstance(value, list):
        return [_redact_value(v, redactor, counts) for v in value]
    if isinstance(value, dict):
        return {k: _redact_value(v, redactor, counts) for k, v in value.items()}
    return value
