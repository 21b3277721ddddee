"""Keyword analysis shared by the index writer and the keyword retriever: both must tokenize identically.

English: lowercase, split on non-alphanumerics, drop stop words, Snowball-stem. Chinese: segment with jieba
(rjieba, in search mode so "个人所得税" also yields "所得税" and "个人") because whitespace tokenizing
would turn a whole Chinese sentence into one unmatched token and score it zero.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import rjieba
import Stemmer

CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")  # a run of Chinese characters
_WORD = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")
_SPLIT = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+)")

# A short list: BM25's idf already discounts frequent words; these only cost postings space.
STOPWORDS = frozenset("""
a an and are as at be but by for from has have how i if in into is it its of on or such that the their then
there these they this to was were what when where which who why will with you your do does did can could
should would may might than so not no nor we our us he she his her them also been being am
""".split())
ZH_STOPWORDS = frozenset("的 了 和 是 在 也 与 及 或 等 吗 呢 吧 啊 这 那 就 都 而 被 把 之 其 为 以 于 对 中 上 下 什么 怎么 如何 哪些 是否".split())

_stemmer = Stemmer.Stemmer("english")


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return _stemmer.stemWord(word)


# What users say and what medical and financial documents write for it (发烧 / 发热: 1 and 11 times in data/'s
# documents, 退烧 / 退热: 0 and 9). Answer selection reads both the question and the passages in the written form
# (`formal`), so a user's word matches the document's. The keyword index keeps the text as it is.
COLLOQUIAL = (("发烧", "发热"), ("退烧", "退热"), ("喝酒", "饮酒"), ("吃药", "服药"), ("拉肚子", "腹泻"),
              ("打针", "注射"))


def formal(text: str) -> str:
    for said, written in COLLOQUIAL:
        text = text.replace(said, written)
    return text


_CN_DIGITS = {c: i for i, c in enumerate("零一二三四五六七八九")} | {"两": 2}
# A count of grades, years of age or months in Chinese numerals ("八年级", "七至九年级", "十二岁"): one or two
# characters, so the text keeps its length and a figure's offsets stay where they were.
_CN_COUNT = re.compile(r"(?:[一二两三四五六七八九]?十[一二三四五六七八九]?|[一二两三四五六七八九])"
                       r"(?=\s*(?:至|到|~|～|-|–)?\s*(?:[一二两三四五六七八九十]{1,2})?\s*(?:年级|岁|周岁|个月))")


def arabic_counts(text: str) -> str:
    """`text` with the Chinese numerals that count grades, years of age or months written in digits ("七至九年级" ->
    "7至9年级"), where the two fit in the same number of characters."""
    def digits(m: re.Match) -> str:
        s = m.group(0)
        if "十" not in s:
            return str(_CN_DIGITS[s])
        tens, _, ones = s.partition("十")
        value = (_CN_DIGITS[tens] if tens else 1) * 10 + (_CN_DIGITS[ones] if ones else 0)
        return str(value) if len(str(value)) == len(s) else s
    return _CN_COUNT.sub(digits, text)


def normalize(text: str) -> str:
    # NFKC folds full-width Latin letters and digits (common in Chinese text) to ASCII.
    return unicodedata.normalize("NFKC", text).lower()


def tokenize(text: str) -> list[str]:
    """Terms for BM25, in order, with repeats (term frequency matters)."""
    return _terms(text, words=True, pairs=False)


# What a generation's keyword index holds besides single terms (the manifest's `keyword_terms`): each pair of
# adjacent terms of a Latin-script run, stop words skipped ("cost of revenue" -> "cost revenu"), searched as the
# phrase leg of hybrid retrieval (rag.retriever; a chunk's BM25 length counts its single terms only, so the word
# leg scores as before). A question that repeats a row label or a phrase of a passage ("Acquisition and
# integration costs") then ranks the passage that holds the phrase above passages that hold its words apart.
# Chinese runs add none: jieba's search mode emits overlapping words, so its adjacent pairs are not phrases.
KEYWORD_TERMS = "terms+pairs"
PAIR_JOIN = " "  # no term holds a space, so a pair never collides with a term


def keyword_terms(text: str) -> list[str]:
    """The terms the keyword index holds: `tokenize`'s, then the adjacent pairs of each Latin run (KEYWORD_TERMS)."""
    return _terms(text, words=True, pairs=True)


def phrase_terms(text: str) -> list[str]:
    """Only the adjacent term pairs of `text`: what the phrase leg looks up (no Chinese segmentation needed)."""
    return _terms(text, words=False, pairs=True)


def question_terms(text: str) -> list[str]:
    """A question's terms, as answer selection matches them against a passage's: `tokenize`'s, except that a
    Chinese run is cut with jieba's dictionary alone. Its HMM joins characters into words no dictionary holds, and
    in a user's sentence those span two words ("不是我办的" -> "我办", "多久内要给我" -> "内要"): no passage holds
    them, so they read as missing words. Without it they stay characters, which a passage's words hold."""
    return _terms(text, words=True, pairs=False, new_words=False)


def _terms(text: str, *, words: bool, pairs: bool, new_words: bool = True) -> list[str]:
    out: list[str] = []
    joined: list[str] = []
    for part in _SPLIT.split(normalize(text)):
        if not part:
            continue
        if CJK_RUN.fullmatch(part):
            if words:
                out.extend(tok for tok in rjieba.cut_for_search(part, new_words) if tok not in ZH_STOPWORDS)
            continue
        run = [_stem(w) for w in _WORD.findall(part) if w not in STOPWORDS and len(w) < 40]
        if words:
            out.extend(run)
        if pairs:
            joined.extend(f"{a}{PAIR_JOIN}{b}" for a, b in zip(run, run[1:]))
    return out + joined


# Place words jieba tags as names that name no place the question could be scoped against: "省会城市" is a kind of
# city, and "中国" the country Chinese documents state national rules for (they hold in each place within it).
_GENERIC_PLACES = frozenset({"城市", "中国"})


def place_names(text: str) -> set[str]:
    """The place names (jieba's part-of-speech tag "ns") of the Chinese runs of `text`: "上海", "江苏省"."""
    return {word for run in CJK_RUN.findall(text) for word, tag in rjieba.tag(run)
            if tag == "ns" and len(word) > 1 and word not in _GENERIC_PLACES}


def cjk_ratio(text: str) -> float:
    letters = sum(1 for c in text if c.isalpha())
    if not letters:
        return 0.0
    return sum(len(m) for m in CJK_RUN.findall(text)) / letters


def detect_language(text: str) -> str:
    """Good enough for routing between the two languages the product serves."""
    return "zh" if cjk_ratio(text[:4000]) > 0.2 else "en"
