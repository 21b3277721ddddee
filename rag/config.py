"""Settings: one object, from defaults < TOML file < environment variables, as strict as an HTTP request.

Environment variables use the prefix ``RAG_`` and ``__`` between section and field, e.g.
``RAG_HOME=/srv/rag``, ``RAG_EMBEDDER=e5-small``, ``RAG_GENERATOR__BACKEND=extractive``,
``RAG_SERVICE__API_KEYS='{"k1": "admin"}'``. The TOML file is ``$RAG_CONFIG`` or ``./rag.toml`` when present.
``rag config`` prints the effective result.

Strict: an unknown key, in the file or as a ``RAG_`` variable, is a `ConfigError` naming it
(``RAG_RETRIEVAL__TOPK=5`` -> ``retrieval.topk: unknown field``); choices are Literals (the HTTP schemas use the
same ones); a variable's text is parsed by its field's type (a number, a boolean, JSON for a list, a table or
an object), a TOML value must already have its field's type.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal

import msgspec

from rag.errors import InvalidInput
from rag.validation import convert, is_container

ENV_PREFIX = "RAG_"
ENV_NOT_SETTINGS = ("RAG_CONFIG",)  # names the file; not a setting itself

# Choices, shared with the HTTP schemas (service/schemas.py) and the CLI.
Backend = Literal["auto", "transformers", "openai", "extractive"]  # rag.generators.BACKENDS
AnnKind = Literal["hnsw", "ivf"]
BuildEngine = Literal["local", "ray"]  # indexer.build.ENGINES
Fusion = Literal["zscore", "rrf"]
Device = Literal["auto", "cpu", "cuda"]
EmbedderBackend = Literal["auto", "torch", "onnx", "onnx-int8", "openvino-int8"]  # rag.models.encoder_variants
Role = Literal["reader", "admin"]


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "rag-service"


class IndexSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    chunk_tokens: int = 200  # embedder tokens per chunk (MiniLM truncates at 256; keep headroom for title)
    chunk_overlap: int = 40
    exact_max_vectors: int = 50_000  # exact (flat) search up to this size, then `ann`
    ann: AnnKind = "hnsw"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 96
    # FAISS threads per search. A server runs searches side by side: one thread each uses the cores better than
    # each search spread over all of them (bench/search_latency.py: intra-query threads made flat search 2-3x
    # slower on a busy 2-core machine). 0 leaves FAISS's default (all cores).
    search_threads: int = 1
    ivf_nlist: int = 0  # 0 = 4*sqrt(n)
    ivf_nprobe: int = 16
    keep_generations: int = 5
    # Passages per encoder call while building; 0 = by device (rag.models.embedders.DEFAULT_BATCH: 32 on a CPU,
    # 256 on CUDA, where small batches leave the GPU waiting on the tokenizer).
    batch_size: int = 0
    verify_sample: int = 32  # chunks that must retrieve themselves before a generation is published
    # Where builds embed (`rag index build` and rebuild jobs alike): this process, or Ray Data (extra `ray`) on
    # the cluster at `ray_address` ("" = a local Ray; "auto"; "ray://head:10001") with `ray_actors` encoders
    # (0 = one per GPU, else one per CPU). The generation written is the same either way.
    engine: BuildEngine = "local"
    ray_address: str = ""
    ray_actors: int = 0


class RetrievalSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    top_k: int = 8
    candidates: int = 100  # per leg, before fusion
    # Hybrid fusion. "zscore" (default): each leg's scores standardized over its candidates, then a weighted
    # sum; unlike rank-only RRF it keeps how far ahead a leg's best hits are, and it beat both legs on all three
    # BEIR sets where RRF fell below BM25 on TAT-QA (see README). "rrf": Reciprocal Rank Fusion with rrf_k.
    fusion: Fusion = "zscore"
    fusion_dense_weight: float = 0.5
    # z-score fusion's third leg: BM25 over the query's adjacent term pairs (rag.text.KEYWORD_TERMS), weighted
    # beside the dense (fusion_dense_weight) and word (1 - fusion_dense_weight) legs; 0 = off. A passage that
    # holds a phrase of the question ("acquisition and integration costs") outranks one that holds its words
    # apart: TAT-QA +0.042, QASC +0.006, NFCorpus -0.000 nDCG@10 at 0.4 (README, Retrieval quality).
    phrase_weight: float = 0.4
    rrf_k: int = 60
    max_per_doc: int = 3
    # Query embedding under concurrency (rag.query_vectors): queries that arrive while the encoder is busy share
    # its next call; with a window, the call also waits this long for more once requests are seen to overlap
    # (never at c=1). Recent query vectors are kept per (encoder identity, text); 0 keeps none.
    query_batch_window_ms: float = 2.0
    query_batch_max: int = 32
    query_cache_size: int = 4096
    reranker: str | None = None  # path to a local cross-encoder; none ships offline
    rerank_top: int = 30
    mmr_lambda: float | None = None  # e.g. 0.7 turns on diversity re-ranking
    # Passages an answer reads (its units are the candidates answer selection scores); a request's top_k wins.
    answer_passages: int = 20
    # Passages of one document an answer reads; 0 = as many as rank among answer_passages. A search page shows at
    # most max_per_doc per document for variety; an answer wants the section that states the fact, and in a
    # document whose every chunk shares the title's words it may rank 8th ("HOW MUCH IS ENOUGH?").
    answer_max_per_doc: int = 0
    # Hybrid pseudo-relevance feedback: when both legs rank the same document first, the dense leg searches again
    # with the query plus this weight times that passage's vector (rag.retriever.feedback_query); 0 = off.
    feedback_weight: float = 2.0
    # Neighbourhood re-ranking of the fused hybrid candidates (rag.retriever.neighbourhood_rerank): a passage
    # gains neighbour_weight x the mean fused score of its `neighbours` nearest fellow candidates, and
    # centroid_weight x its standardized cosine to the centroid of the three best; the best passages of the first
    # two documents keep their places. 0 / 0 = off. NFCorpus +0.019, QASC +0.005, TAT-QA -0.001 nDCG@10 (README).
    neighbour_weight: float = 0.75
    neighbours: int = 10
    centroid_weight: float = 1.0

    def __post_init__(self):
        # A negative cap would keep no passage at all: every search empty, every answer an abstention.
        for name in ("max_per_doc", "answer_max_per_doc"):
            if getattr(self, name) < 0:
                raise ValueError(f"retrieval.{name} must be 0 (no cap) or more, got {getattr(self, name)}")


class AnswerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # A local extractive question-answering folder (SQuAD 2.0 style; rag.qa_model), none ships offline. When set,
    # it reads the question with the `qa_passages` best passages: the answer is the unit holding its span, and
    # the question is answered only when the span outscores "no answer" by `qa_min_margin` logits (instead of
    # the fitted abstention model; the checks that the unit states the fact for what the question names stay).
    qa_model: str | None = None
    qa_passages: int = 3
    qa_min_margin: float = 0.0
    qa_device: Device = "auto"

    def __post_init__(self):
        if self.qa_passages < 1:
            raise ValueError(f"answers.qa_passages must be 1 or more, got {self.qa_passages}")
        # Checked here so that a wrong path stops the service at start-up, not its first question.
        if self.qa_model and not Path(self.qa_model).expanduser().is_dir():
            raise ValueError(f"answers.qa_model: model folder not found: {self.qa_model}")


class GeneratorSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # "auto": a local Transformer in half precision on a GPU, the extractive answer on a CPU, where SmolLM2-135M
    # takes seconds per answer and answers worse (README, Answers).
    backend: Backend = "auto"
    model: str = "smollm2"  # named default, a local HF folder, or a .gguf file
    device: Device = "auto"
    max_new_tokens: int = 200
    temperature: float = 0.0
    # The generation policy (rag.generators.slots): at most `max_concurrent` generations at once in this process,
    # each given `timeout_s` before the extractive result replaces it (the reason in `fallback`). A generation is
    # one caller's answer, summary or set of blurbs, however many prompts it sends. 0 = by hardware: on a CUDA
    # machine as many as the local backend decodes together (`max_batch`), so concurrent requests fill its batch;
    # 2 elsewhere.
    timeout_s: float = 120.0
    max_concurrent: int = 0
    # The local transformers backend's batch scheduler (rag.generators.batching), below the slots: at most
    # `max_batch` sequences decode together (0 = 32 on CUDA, 1 on a CPU), and their prompt + max_new_tokens add up
    # to at most `max_tokens_in_flight` (the KV cache they may grow to; 0 = no cap). The rest wait their turn.
    max_batch: int = 0
    max_tokens_in_flight: int = 65536
    openai_base_url: str = "http://127.0.0.1:8080/v1"
    openai_model: str = "default"
    openai_api_key: str | None = None
    context_tokens: int = 1536  # passages budget in the prompt
    # Per domain; "domain:language" keys give the text for answers in that language.
    disclaimers: dict[str, str] = msgspec.field(default_factory=lambda: {
        "finance": "This is general information, not financial advice.",
        "medical": "This is general information, not medical advice; consult a qualified clinician.",
        "finance:zh": "以上为一般性信息，不构成理财建议。",
        "medical:zh": "以上为一般性信息，不构成医疗建议；请咨询专业医生。",
    })


class ApiKeySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One API key as a table (rag.access): its role, the document groups it belongs to (`*` = every document),
    and an optional id that names it in logs and the admin's key list instead of its hash."""

    role: Role | None = None  # required: a key without a role is refused at start-up (ServiceSettings)
    groups: list[str] = msgspec.field(default_factory=list)
    id: str | None = None


class ServiceSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8000
    # API key -> role ("reader" sees public documents, "admin" every one) or a table {role, groups, id}.
    # Empty and open_mode=False means every request is refused.
    api_keys: dict[str, Role | ApiKeySettings] = msgspec.field(default_factory=dict)
    open_mode: bool = False  # explicit: no auth at all, for local demos
    open_groups: list[str] = msgspec.field(default_factory=list)  # what open mode sees besides public documents
    rate_limit_per_minute: int = 600
    # Empty: each process counts its own requests (token buckets). A redis:// (or valkey://) URL: every replica
    # counts in that one store (Litestar's rate-limit middleware), so the limit holds across replicas.
    rate_limit_store: str = ""
    max_body_bytes: int = 2_000_000
    max_document_bytes: int = 1_000_000
    cors_origins: list[str] = msgspec.field(default_factory=list)
    queue_timeout_s: float = 10.0  # how long a call waits for a generator slot before Busy (HTTP 503)
    generation_poll_s: float = 1.0  # how often the published pointer is checked

    def __post_init__(self):
        for n, spec in enumerate(self.api_keys.values(), 1):
            if isinstance(spec, ApiKeySettings) and spec.role is None:
                name = f"key {spec.id!r}" if spec.id else f"key number {n}"  # never the key itself
                raise ValueError(f"api_keys: {name} names no role; give role = \"reader\" or \"admin\"")


class StateSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Empty: the data home's state.duckdb (one process). "postgresql://user:pass@host:port/db": PostgreSQL, for
    # several `rag serve` replicas over one data home (users, events, jobs, idempotency keys shared).
    url: str = ""
    pool_min: int = 1
    pool_max: int = 20  # per process; a request waits up to timeout_s for a free one (mind max_connections)
    timeout_s: float = 10.0  # connecting, and waiting for a pooled connection


class RecommendSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Recommendations (rag.recommend).

    The defaults suit a document library: what a reader engages with in general (the profile) counts more than
    the very last click. `rag eval recommend` tunes the same knobs on a validation split of its own data,
    starting from the sequential profile in evaluation/recommend.py (MovieLens rewards recency heavily)."""

    half_life_days: float = 14.0  # time decay of a user's events in the profile and co-engagement seeds
    trending_half_life_days: float = 7.0  # decay of popularity ("trending")
    interest_share: float = 0.3  # share of declared interests in the profile vector when the user has events
    event_weights: dict[str, float] = msgspec.field(default_factory=lambda: {
        "view": 1.0, "click": 1.5, "like": 3.0, "share": 3.0, "bookmark": 3.0, "dismiss": -4.0,
        "dwell": 0.0})  # dwell_s adds a bonus on any event; a rating weighs as below
    # Weight of a top rating (the maximum of events.rating_scale). A rating weighs rating_weight x its position
    # on the scale from the neutral point: -1 at the minimum, 0 at the neutral point, +1 at the maximum (on the
    # default 1-5 scale: (value - 3) * 1.5, so 1 and 2 count against).
    rating_weight: float = 3.0
    dwell_bonus_per_minute: float = 1.0
    dwell_bonus_max: float = 2.0
    # Blend (each signal min-max normalized over the candidate pool).
    weight_profile: float = 0.6
    weight_coengagement: float = 0.4
    weight_popularity: float = 0.05
    # Share of the user's positive engagement in the candidate's domain. Constant on single-domain data such as
    # MovieLens, so not tuned there; set so that a clear shift between domains shows in the next list.
    weight_domain: float = 0.3
    # The same for the document's language (half declared language, half what the user read): an English reader
    # who opened one Chinese article should still mostly get English ones. Also constant on MovieLens.
    weight_language: float = 0.3
    mmr_lambda: float = 0.9  # 1.0 = no diversity re-rank
    candidates: int = 200  # per source (profile neighbours, co-engagement, trending)
    # Co-engagement: item-item co-occurrence of docs engaged by the same user near each other in their history.
    order_decay: float = 0.9  # seed weight multiplier per step back from the user's latest engagement
    max_seeds: int = 50
    coengagement_window: int = 50  # how far apart (in a user's history) two engagements still co-occur
    coengagement_tau: float = 10.0  # proximity kernel exp(-(distance-1)/tau)
    coengagement_alpha: float = 0.5  # normalization c_ij / (n_i^alpha * n_j^(1-alpha)); 0.5 = cosine
    # Score profiles and profile candidates with item vectors minus the catalogue's mean, renormalized (e5's
    # vectors share one dominant direction). ML-100K: profile alone nDCG@10 0.0132 -> 0.0177, coverage 0.46 ->
    # 0.70; the tuned blend 0.1177 -> 0.1222 (README, Recommendations).
    center_vectors: bool = True
    coengagement_neighbors: int = 200  # kept per item
    coengagement_ttl_s: float = 60.0  # a changed event log is re-read at most this often (0 = every change)
    near_duplicate_cosine: float = 0.98
    exclude_seen: bool = True


class EventsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Engagement events (rag.events).

    `rating_scale`: the [min, max] a `rating` event's value must lie in (1-5 stars by default; [0.5, 5] for half
    stars, [1, 10], [0, 100], [0, 1] for thumbs down/up). A rating outside it is rejected (that event alone).
    `rating_neutral`: the value that says neither like nor dislike; None = the midpoint of the scale. Ratings are
    mapped to one internal range for profiles (-1 at min, 0 at neutral, +1 at max), whatever the scale."""

    rating_scale: tuple[float, float] = (1.0, 5.0)
    rating_neutral: float | None = None

    def __post_init__(self):
        lo, hi = (float(x) for x in self.rating_scale)
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            raise ValueError(f"events.rating_scale must be [min, max] with min < max, got [{lo:g}, {hi:g}]")
        self.rating_scale = (lo, hi)
        if self.rating_neutral is not None and not lo < self.rating_neutral < hi:
            raise ValueError(f"events.rating_neutral must lie strictly inside the rating scale [{lo:g}, {hi:g}], "
                             f"got {self.rating_neutral:g}")


PiiKind = Literal["email", "phone", "card", "ssn", "cn_id", "iban"]  # indexer.redaction


class PrivacySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PII redaction on ingest (indexer.redaction) and what logs may say about queries.

    A document is redacted when its domain is in `redact_domains` ("*": every domain) or it was loaded from under
    one of `redact_sources` (folders or files); the kinds in `redact_kinds` become typed placeholders ([EMAIL],
    [PHONE], ...) before chunking, so the original never reaches a chunk, a vector or the keyword index."""

    redact_domains: list[str] = msgspec.field(default_factory=lambda: ["medical"])
    redact_sources: list[str] = msgspec.field(default_factory=list)
    redact_kinds: list[PiiKind] = msgspec.field(
        default_factory=lambda: ["email", "phone", "card", "ssn", "cn_id", "iban"])
    # National formats looked for besides +country numbers. Few on purpose: short-number regions (DE, GB) read
    # statistics such as "0.89-8.44" as phone numbers.
    phone_regions: list[str] = msgspec.field(default_factory=lambda: ["US", "CN"])
    log_queries: bool = False  # False: request logs carry a query's length and hash, never its text


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    home: str = msgspec.field(default_factory=lambda: str(default_home()))
    # Named default or a local sentence-transformers folder. e5-small by measurement (README, Default embedder):
    # dense nDCG@10 0.492 vs MiniLM's 0.452 over the three BEIR sets, and it reads Chinese; MiniLM encodes ~2x
    # faster and stays available as "minilm".
    embedder: str = "e5-small"
    # What runs the embedder: PyTorch, or an exported CPU variant (ONNX Runtime fp32/int8, OpenVINO int8; the
    # `quantized` extra). "auto": PyTorch on CUDA, rag.models.embedders.CPU_DEFAULT_BACKEND on a CPU. A build
    # records the variant in its manifest and queries of that generation use the same one, whatever this says.
    embedder_backend: EmbedderBackend = "auto"
    source_dirs: list[str] = msgspec.field(default_factory=list)
    model_cache: str = ""  # where converted models (e5-small, SmolLM2) are cached; default <home>/models
    index: IndexSettings = msgspec.field(default_factory=IndexSettings)
    retrieval: RetrievalSettings = msgspec.field(default_factory=RetrievalSettings)
    answers: AnswerSettings = msgspec.field(default_factory=AnswerSettings)
    generator: GeneratorSettings = msgspec.field(default_factory=GeneratorSettings)
    service: ServiceSettings = msgspec.field(default_factory=ServiceSettings)
    recommend: RecommendSettings = msgspec.field(default_factory=RecommendSettings)
    events: EventsSettings = msgspec.field(default_factory=EventsSettings)
    privacy: PrivacySettings = msgspec.field(default_factory=PrivacySettings)
    state: StateSettings = msgspec.field(default_factory=StateSettings)

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser()

    @property
    def cache_dir(self) -> Path:
        return self.home_path / "cache"

    @property
    def models_dir(self) -> Path:
        return Path(self.model_cache).expanduser() if self.model_cache else self.home_path / "models"

    @property
    def state_db(self) -> Path:
        return self.home_path / "state.duckdb"

    @property
    def documents_dir(self) -> Path:
        """The source store the documents API writes to (indexed with `source_dirs`)."""
        return self.home_path / "documents"

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)

    def redacted(self) -> dict[str, Any]:
        d = self.to_dict()
        d["service"]["api_keys"] = {k[:3] + "…": v for k, v in d["service"]["api_keys"].items()}
        if d["generator"].get("openai_api_key"):
            d["generator"]["openai_api_key"] = "…"
        for section, key in (("state", "url"), ("service", "rate_limit_store")):  # URLs may carry a password
            d[section][key] = re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:…@", d[section][key])
        return d


class ConfigError(InvalidInput):
    """A setting that is unknown or has the wrong type or value; `field` is its dotted name."""


def _field_type(path: list[str]) -> Any:
    """The annotation of the setting at `path` (None for an unknown one)."""
    typ: Any = Settings
    for part in path:
        if not (isinstance(typ, type) and issubclass(typ, msgspec.Struct)):
            return None
        fields = {f.encode_name: f for f in msgspec.structs.fields(typ)}
        if part not in fields:
            return None
        typ = fields[part].type
    return typ


def _env_value(var: str, path: list[str], raw: str) -> Any:
    """A variable's text parsed by its field's type: JSON for a list, table or object; the field's own scalar
    type otherwise ("5", "0.3", "true", "hnsw"); "null" for an optional one."""
    typ = _field_type(path)
    name = ".".join(path)
    try:
        if typ is None:
            raise ConfigError(f"{name}: unknown field", field=name)
        if is_container(typ):
            try:
                value = json.loads(raw)
            except ValueError as e:
                raise ConfigError(f"{name}: expected JSON ({e})", field=name) from None
            return convert(value, typ, strict=True, error=ConfigError, at=tuple(path))
        if raw == "null" and type(None) in typing.get_args(typ):
            return None
        return convert(raw, typ, strict=False, error=ConfigError, at=tuple(path))
    except ConfigError as e:
        raise ConfigError(f"{var}: {e.message}", field=e.field) from None


def _env_overrides(environ: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(nested overrides, dotted setting name -> the variable that set it)."""
    out: dict[str, Any] = {}
    names: dict[str, str] = {}
    for var, raw in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX) or var in ENV_NOT_SETTINGS:
            continue
        path = var[len(ENV_PREFIX):].lower().split("__")
        value = _env_value(var, path, raw)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
        names[".".join(path)] = var
    return out, names


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and k not in ("api_keys", "disclaimers"):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def load_settings(config_file: str | Path | None = None, environ: dict[str, str] | None = None,
                  **overrides: Any) -> Settings:
    environ = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    path = config_file or environ.get("RAG_CONFIG") or ("rag.toml" if Path("rag.toml").exists() else None)
    source = ""
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file not found: {p}", field="config")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: invalid TOML: {e}", field="config") from e
        source = str(p)
    env, env_names = _env_overrides(environ)
    _merge(data, env)
    _merge(data, {k: v for k, v in overrides.items() if v is not None})
    try:
        return convert(data, Settings, strict=True, error=ConfigError)
    except ConfigError as e:
        # A value that only fails together with others (a rating scale and its neutral point): say who set them.
        where = e.field or ""
        setters = [var for name, var in env_names.items()
                   if not where or name == where or name.startswith(f"{where}.") or where.startswith(f"{name}.")]
        origin = ", ".join(setters) or source or "settings"
        raise ConfigError(f"{origin}: {e.message}", field=e.field) from None
