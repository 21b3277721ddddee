"""`Application`: the one object that owns every use case. The HTTP service and the CLI are thin layers over it:
they parse input, make one call, and render the result (or map a `rag.errors` error to a status or exit code).

    app = Application(settings, builder=indexer.build.Indexer())
    app.ask("How often should I rebalance?")             # -> Answer (same answer from `rag ask` and POST /v1/ask)
    app.search("expense ratio", mode="keyword")          # -> SearchResult
    app.recommend("u-alice", k=5, explain=True)          # -> RecommendationList (with `fallback` when blurbs fell back)
    app.start_rebuild()                                  # -> Job; app.job(id), app.rollback(id), ...

It owns:
- the published snapshot, followed as it changes (`PublishedSnapshot`): every call resolves it once and runs on it
  (or on the `snapshot=` the caller resolved, so an HTTP response can name it before the work starts);
- the generation policy, one for answers, summaries and blurbs: one limit on concurrent generations, one timeout
  (`settings.generator.timeout_s`), both in `self.generators.slots` (rag.generators.slots); one fallback rule:
  when the generator is unavailable, fails, times out or writes something the checks reject, the extractive
  result replaces it and `fallback` says why (`rag.generators.fallback_reason`). All slots taken is `Busy`;
- the collaborators, built on first use: answerer, summarizer, recommender, the state database (users, events,
  jobs), the documents store and the rebuild jobs.

`builder` is the batch side (`rag.builds.Builder`; the service and the CLI pass `indexer.build.Indexer()`): `rag`
never imports the indexer, the indexer imports `rag`. Without one, the build, rebuild and documents use cases
raise `Unavailable`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag import snapshot_files
from rag.access import KeyActivity, KeyUse, Principal, Visibility, groups_of, restrict
from rag.answering import Answer, AnswerEvent, Answerer
from rag.builds import Builder, BuildReport, ProgressCallback
from rag.config import Settings, load_settings
from rag.documents import DocumentFields, DocumentPage, Documents, DocumentView, DocumentWrite, NewDocument
from rag.documents import SourceDocuments
from rag.errors import InvalidInput, NotFound, Unavailable
from rag.events import IngestReport, UserImportReport, load_events_jsonl, load_users_jsonl
from rag.generators import GeneratorPool
from rag.generators.slots import Lease
from rag.jobs import Job, RebuildJobs
from rag.published import NoSnapshot, PublishedSnapshot
from rag.recommend import RecommendationList, Recommender
from rag.recommend.blurbs import BlurbWriter
from rag.retriever import Retriever, SearchResult
from rag.snapshot import Snapshot
from rag.state import StateDB
from rag.state_engines import open_state
from rag.summarize import Summarizer, Summary, UnknownDocument
from rag.types import SEARCH_RESULTS, Filters

log = logging.getLogger(__name__)


@dataclass
class SnapshotInfo:
    """One index generation as operators see it (`rag index list|show`, GET /v1/admin/index/generations)."""

    id: str
    published: bool
    loaded: bool  # this process serves it
    created_at: str
    embedder: dict[str, Any]
    counts: dict[str, Any]
    index_type: str
    sources: list[str]
    manifest: dict[str, Any]
    parent: str | None = None
    build_seconds: float | None = None


@dataclass
class Rollback:
    published: str
    previous: str | None


@dataclass
class Readiness:
    status: str  # ready | not_ready
    generation_id: str | None = None
    embedder: str | None = None
    documents: int | None = None
    chunks: int | None = None
    reason: str | None = None


class AnswerStream:
    """The events of one streamed answer (retrieval, token..., citation..., done | error), with the generator slot
    reserved for it, which it releases when the iteration ends or it is closed, however that happens."""

    def __init__(self, events: Iterator[AnswerEvent], generation_id: str, lease: Lease | None):
        self._events = events
        self.generation_id = generation_id
        self._lease = lease

    def __iter__(self) -> "AnswerStream":
        return self

    def __next__(self) -> AnswerEvent:
        try:
            return next(self._events)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._events.close()
        if self._lease is not None:
            self._lease.release()


class Application:
    def __init__(self, settings: Settings | None = None, *, builder: Builder | None = None,
                 published: PublishedSnapshot | None = None):
        self.settings = settings or load_settings()
        self.builder = builder
        self.published = published or PublishedSnapshot(self.settings)
        self.retriever = Retriever(self.settings.retrieval)
        self.generators = GeneratorPool(self.settings.generator, self.settings.models_dir,
                                        queue_timeout_s=self.settings.service.queue_timeout_s)
        self._parts: dict[str, Any] = {}
        self._parts_lock = threading.RLock()

    # -- collaborators, built once on first use -------------------------------------------------------------
    def _part(self, name: str, make):
        with self._parts_lock:
            if name not in self._parts:
                self._parts[name] = make()
            return self._parts[name]

    def loaded(self, name: str) -> Any | None:
        """A collaborator if it was built already (metrics look without building one), else None."""
        return self._parts.get(name)

    @property
    def answerer(self) -> Answerer:
        return self._part("answerer", lambda: Answerer(self.settings, self.retriever, self.generators))

    @property
    def summarizer(self) -> Summarizer:
        return self._part("summarizer", lambda: Summarizer(self.settings, self.retriever, self.generators))

    @property
    def state(self) -> StateDB:
        """The state database, opened read-write: `StateLocked` when another process holds it."""
        return self._part("state", lambda: open_state(self.settings))

    @property
    def recommender(self) -> Recommender:
        return self._part("recommender", lambda: Recommender(self.settings, self.state))

    @property
    def documents(self) -> Documents:
        def load(paths):
            return self._builder("the documents store").load_documents(self.settings, paths)

        return self._part("documents", lambda: Documents(SourceDocuments(self.settings, load)))

    @property
    def jobs(self) -> RebuildJobs:
        return self._part("jobs", lambda: RebuildJobs(self.settings, self.state, self.builder,
                                                      on_published=self.published.refresh))

    def _builder(self, what: str) -> Builder:
        if self.builder is None:
            raise Unavailable(f"{what} need a builder: construct Application(settings, builder=Indexer())")
        return self.builder

    def close(self, wait_s: float = 5.0) -> bool:
        """Close the state database once no rebuild job runs; False (and left open) when one still does."""
        jobs = self.loaded("jobs")
        if jobs is not None and not jobs.wait(wait_s):
            log.warning("a rebuild job is still running; it will be marked failed on restart")
            return False
        if self.loaded("key_use") is not None:
            self._flush_key_use()
        state = self.loaded("state")
        if state is not None:
            state.close()
        return True

    # -- snapshots (index generations) -------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The published snapshot; NoSnapshot (Unavailable) when none is."""
        return self.published.current()

    def published_snapshot(self) -> Snapshot | None:
        try:
            return self.published.current()
        except NoSnapshot:
            return None

    def snapshots(self) -> list[SnapshotInfo]:
        """Every complete snapshot, newest first."""
        current = snapshot_files.read_pointer(self.settings.home_path)
        return [self._info(m, current) for m in snapshot_files.list_snapshots(self.settings.home_path)]

    def snapshot_info(self, snapshot_id: str | None = None) -> SnapshotInfo:
        """One snapshot (default: the published one)."""
        home = self.settings.home_path
        current = snapshot_files.read_pointer(home)
        snapshot_id = snapshot_id or current
        if not snapshot_id:
            raise NoSnapshot("no generation is published yet")
        path = snapshot_files.snapshot_dir(home, snapshot_id)
        if not (path / snapshot_files.MANIFEST).exists():
            raise NotFound(f"no generation {snapshot_id!r}", field="generation_id", hint=_LIST_HINT)
        return self._info(snapshot_files.read_manifest(path), current)

    def _info(self, m: snapshot_files.Manifest, current: str | None) -> SnapshotInfo:
        mj = snapshot_files.manifest_json(m)
        return SnapshotInfo(id=m.id, published=m.id == current, loaded=m.id == self.published.loaded_id,
                            created_at=m.created_at, embedder=mj["embedder"], counts=mj["counts"],
                            index_type=m.index_type, sources=list(m.sources), parent=m.parent,
                            build_seconds=m.build_seconds, manifest=mj)

    def rollback(self, snapshot_id: str | None = None) -> Rollback:
        """Publish an older snapshot (default: the one before the published one). A process that serves one
        loads it at once, and puts the pointer back (Unavailable) when it cannot."""
        home = self.settings.home_path
        previous = snapshot_files.read_pointer(home)
        if snapshot_id is None:
            ids = [m.id for m in snapshot_files.list_snapshots(home)]
            if previous not in ids or ids.index(previous) + 1 >= len(ids):
                raise NotFound("no older generation to roll back to", field="generation_id")
            snapshot_id = ids[ids.index(previous) + 1]
        try:
            snapshot_files.publish(home, snapshot_id)
        except snapshot_files.SnapshotNotFound as e:
            e.hint = _LIST_HINT
            raise
        if self.published.loaded is not None:
            try:
                self.published.refresh()  # load it now: the next request already runs on it
            except Exception as e:  # noqa: BLE001 - whatever broke, the published pointer must stay servable
                if previous:
                    snapshot_files.publish(home, previous)
                raise Unavailable(f"generation {snapshot_id} could not be loaded ({e}); the pointer was put back "
                                  f"to {previous}") from e
        return Rollback(published=snapshot_id, previous=previous)

    def gc(self, keep: int | None = None) -> list[str]:
        """Remove all but the newest `keep` snapshots (default `index.keep_generations`); never the published."""
        keep = self.settings.index.keep_generations if keep is None else keep
        if keep < 1:
            raise InvalidInput("keep must be at least 1", field="keep")
        return snapshot_files.gc(self.settings.home_path, keep)

    def readiness(self) -> Readiness:
        """Ready when a snapshot is loaded and its embedder is ready; the reason otherwise. Readiness is open (no
        API key): its counts are of the public documents only, so they never tell how many are restricted
        (the whole generation's are in GET /v1/admin/index/generations)."""
        try:
            snapshot = self.snapshot()
            _ = snapshot.embedder  # loaded with the snapshot; raises if its model cannot be loaded
        except NoSnapshot as e:
            return Readiness(status="not_ready", reason=f"no index generation published: {e}")
        except Exception as e:  # noqa: BLE001 - readiness reports any failure as a reason
            return Readiness(status="not_ready", reason=f"{type(e).__name__}: {e}")
        documents, chunks = snapshot.visible_counts(groups_of(Visibility.public()))
        return Readiness(status="ready", generation_id=snapshot.id, embedder=snapshot.manifest.embedder.name,
                         documents=documents, chunks=chunks)

    # -- builds and rebuild jobs -----------------------------------------------------------------------------
    def build(self, sources: Sequence[str | Path] | None = None, *, embedder: str | None = None,
              publish: bool = True, force: bool = False, show_progress: bool = True,
              on_progress: ProgressCallback | None = None, engine: str | None = None,
              ray_address: str | None = None, ray_actors: int | None = None) -> BuildReport:
        """Build in this process (`rag index build`); default sources: `source_dirs` and the documents store.
        `engine="ray"`: the chunks are embedded on Ray Data (the cluster at `ray_address`, or a local one); each
        defaults to `settings.index` (as for rebuild jobs)."""
        if not sources:
            sources = list(self.settings.source_dirs)
            docs = self.settings.documents_dir
            if docs.exists() and any(docs.iterdir()):
                sources.append(str(docs))
        if not sources:
            raise InvalidInput("nothing to index: pass SOURCE folders, or set source_dirs in the settings",
                               field="sources")
        builder = self._builder("builds")
        on_engine = {k: v for k, v in (("engine", engine), ("ray_address", ray_address),
                                       ("ray_actors", ray_actors)) if v is not None}
        return _from_file(lambda: builder.build(self.settings, sources, embedder=embedder, publish=publish,
                                                force=force, show_progress=show_progress, on_progress=on_progress,
                                                **on_engine),
                          field="sources")

    def start_rebuild(self, sources: list[str] | None = None, *, embedder: str | None = None,
                      force: bool = False) -> Job:
        """A rebuild in the background (rag.jobs): follow it with `job(id)`. Conflict while one runs."""
        self._builder("rebuild jobs")
        return self.jobs.start_rebuild(sources, embedder, force=force)

    def job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}", field="job_id")
        return job

    def recent_jobs(self, limit: int = 20) -> list[Job]:
        return self.jobs.list(limit)

    def recover_jobs(self) -> list[str]:
        """Mark jobs a dead process left running as failed (at service start)."""
        return self.jobs.recover()

    # -- search, answers, summaries --------------------------------------------------------------------------
    # `visibility` (rag.access): what the caller may see; None (a library caller) sees every document. The
    # service passes its principal's, the CLI everything or `--as`'s.
    def search(self, query: str, *, mode: str = "hybrid", filters: Filters | None = None, top_k: int | None = None,
               rerank: bool | None = None, mmr_lambda: float | None = None, results: str = "chunks",
               snapshot: Snapshot | None = None, visibility: Visibility | None = None) -> SearchResult:
        """`results="documents"`: one hit per document, its best passage, documents ranked by it."""
        query = _nonblank(query, "query")
        if results not in SEARCH_RESULTS:
            raise InvalidInput(f"results must be one of {', '.join(SEARCH_RESULTS)}, not {results!r}",
                               field="results")
        filters = restrict(filters, visibility)
        if rerank and not self.retriever.can_rerank:
            raise InvalidInput("no reranker configured (set retrieval.reranker to a cross-encoder folder)",
                               field="rerank")
        return self.retriever.search(snapshot or self.snapshot(), query, mode=mode, filters=filters, top_k=top_k,
                                     rerank=rerank, mmr_lambda=mmr_lambda,
                                     max_per_doc=1 if results == "documents" else None)

    def ask(self, question: str, *, filters: Filters | None = None, top_k: int | None = None,
            history: list[dict] | None = None, backend: str | None = None, mode: str = "hybrid",
            snapshot: Snapshot | None = None, visibility: Visibility | None = None) -> Answer:
        filters = restrict(filters, visibility)
        return self.answerer.answer(snapshot or self.snapshot(), question, filters=filters, top_k=top_k,
                                    history=history, backend=backend, mode=mode)

    def ask_stream(self, question: str, *, filters: Filters | None = None, top_k: int | None = None,
                   history: list[dict] | None = None, backend: str | None = None, mode: str = "hybrid",
                   snapshot: Snapshot | None = None, visibility: Visibility | None = None) -> AnswerStream:
        """The answer as events. Bad input, no snapshot and all slots busy fail here, before the first event."""
        _nonblank(question, "question")
        filters = restrict(filters, visibility)
        snapshot = snapshot or self.snapshot()
        lease = self.generators.slots.reserve() if self.generators.uses_model(backend) else None
        events = self.answerer.answer_stream(snapshot, question, filters=filters, top_k=top_k, history=history,
                                             backend=backend, mode=mode, lease=lease)
        return AnswerStream(events, snapshot.id, lease)

    def summarize(self, *, doc_id: str | None = None, doc_ids: list[str] | None = None, query: str | None = None,
                  filters: Filters | None = None, style: str = "brief", max_words: int | None = None,
                  backend: str | None = None, top_k: int | None = None, snapshot: Snapshot | None = None,
                  visibility: Visibility | None = None) -> Summary:
        """Exactly one of `doc_id`, `doc_ids`, `query`; `filters` with a query only. NotFound names an unknown id,
        and a document the caller may not see: its existence is not revealed."""
        given = [name for name, v in (("doc_id", doc_id), ("doc_ids", doc_ids), ("query", query)) if v is not None]
        if len(given) != 1:
            raise InvalidInput("give exactly one of doc_id, doc_ids, query" +
                               (f" (got {', '.join(given)})" if given else ""),
                               field=given[1] if len(given) > 1 else "doc_id")
        if filters is not None and query is None:
            raise InvalidInput("filters apply to a query summary only", field="filters")
        ids = [doc_id] if doc_id else (list(dict.fromkeys(doc_ids)) if doc_ids else None)
        snapshot = snapshot or self.snapshot()
        hidden = next((d for d in ids or () if not snapshot.doc_visible(d, groups_of(visibility))), None)
        if hidden is not None and hidden in snapshot.doc_row_of:
            raise UnknownDocument(hidden, snapshot.id, field="doc_id" if doc_id else "doc_ids")
        filters = restrict(filters, visibility) if query is not None else filters
        try:
            return self.summarizer.summarize(snapshot, doc_ids=ids,
                                             query=_nonblank(query, "query") if query is not None else None,
                                             filters=filters, style=style, max_words=max_words, backend=backend,
                                             top_k=top_k)
        except UnknownDocument as e:
            e.field = "doc_id" if doc_id else "doc_ids"
            raise

    # -- recommendations, events, users ------------------------------------------------------------------------
    def recommend(self, user_id: str, *, k: int = 10, domain: str | list[str] | None = None,
                  language: str | list[str] | None = None, audience: str | list[str] | None = None,
                  exclude_seen: bool | None = None, explain: bool = False, backend: str | None = None,
                  snapshot: Snapshot | None = None, visibility: Visibility | None = None) -> RecommendationList:
        """"For you". With `explain`, a checked one-sentence blurb per item from `backend` (default: the
        configured one) under the generation policy; `fallback` says why opening sentences replaced them."""
        _at_least_one(k, "k")
        snapshot = snapshot or self.snapshot()
        writer = None
        if explain:
            name = self.generators.resolve_name(backend)  # InvalidInput for an unknown backend
            writer = BlurbWriter(self.generators, embedder=snapshot.embedder, backend=name)
        result = self.recommender.recommend(snapshot, user_id, k=k, domain=domain, language=language,
                                            audience=audience, exclude_seen=exclude_seen, explain=explain,
                                            explainer=writer, access=groups_of(visibility))
        if writer is not None:
            result.backend = writer.backend
        return result

    def similar(self, doc_id: str, *, k: int = 10, snapshot: Snapshot | None = None,
                visibility: Visibility | None = None) -> RecommendationList:
        """"More like this"; NotFound for a document the snapshot does not have (or the caller may not see)."""
        _at_least_one(k, "k")
        return self.recommender.similar(snapshot or self.snapshot(), doc_id, k=k, access=groups_of(visibility))

    def trending(self, *, domain: str | None = None, k: int = 10, snapshot: Snapshot | None = None,
                 visibility: Visibility | None = None) -> RecommendationList:
        _at_least_one(k, "k")
        return self.recommender.trending(snapshot or self.snapshot(), domain=domain, k=k,
                                         access=groups_of(visibility))

    def record_events(self, events: list[Any]) -> IngestReport:
        """Each event validated on its own: the good ones stored, the bad ones reported by index and field."""
        return self.recommender.ingest(events)

    def import_events(self, path: str | Path) -> IngestReport:
        """An events JSONL file; rejected lines are reported by line number."""
        return _from_file(lambda: load_events_jsonl(self.state, path, rating_scale=self.settings.events))

    def import_users(self, path: str | Path) -> UserImportReport:
        return _from_file(lambda: load_users_jsonl(self.state, path))

    def forget_user(self, user_id: str) -> dict[str, Any]:
        """Remove a user, their events and cached profile; co-engagement and trending are rebuilt without them on
        the next request. NotFound when the state database holds nothing of them."""
        removed = self.state.forget_user(user_id)
        if not removed["user"] and not removed["events"]:
            raise NotFound(f"no user {user_id!r}", field="user_id")
        self.recommender.forget(user_id)
        return {"user_id": user_id, "user_removed": removed["user"], "events_removed": removed["events"]}

    # -- API keys (rag.access) ----------------------------------------------------------------------------------
    def note_key_use(self, key_id: str) -> None:
        """Count a request of this key; written to the state database at most every KeyUse.flush_s."""
        uses = self._part("key_use", KeyUse)
        if uses.note(key_id):
            threading.Thread(target=self._flush_key_use, daemon=True, name="rag-key-use").start()

    def _flush_key_use(self) -> None:
        uses = self.loaded("key_use")
        pending = uses.take() if uses is not None else {}
        if not pending:
            return
        try:
            self.state.record_key_use(pending)
        except Exception:  # noqa: BLE001 - bookkeeping never fails a request; the counts wait for the next flush
            log.warning("could not record API key use", exc_info=True)
            uses.put_back(pending)

    def key_activity(self, principals: Sequence[Principal]) -> list[KeyActivity]:
        """Each configured key (by id, never the key) with its role, groups and last use."""
        self._flush_key_use()
        used = self.state.key_use()
        return [KeyActivity(key_id=p.key_id or "", role=p.role, groups=list(p.groups),
                            last_used_at=used[p.key_id][0] if p.key_id in used else None,
                            requests=used[p.key_id][1] if p.key_id in used else 0) for p in principals]

    def user(self, user_id: str) -> dict[str, Any]:
        found = self.state.get_user(user_id)
        if found is None:
            raise NotFound(f"no user {user_id!r}", field="user_id")
        return found

    def import_demo(self, folder: str | Path) -> dict[str, Any]:
        """A demo folder's users.jsonl and events.jsonl; events only into an empty event log (a restart does
        not double them), users always (an upsert changes nothing the second time)."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise NotFound(f"{folder} is not a folder", field="path")
        users, events = folder / "users.jsonl", folder / "events.jsonl"
        if not users.exists() and not events.exists():
            raise NotFound(f"{folder} holds neither users.jsonl nor events.jsonl", field="path")
        held = self.state.counts()["events"]
        done: dict[str, Any] = {}
        if users.exists():
            done["users"] = self.import_users(users).as_dict()
        if events.exists():
            if held:
                done["events"] = f"skipped: the state DB already holds {held} events"
            else:
                rep = self.import_events(events)
                done["events"] = {"accepted": rep.accepted, "duplicates": rep.duplicates,
                                  "rejected": rep.rejected_events}
        return done

    # -- documents ---------------------------------------------------------------------------------------------
    def list_documents(self, *, domain: str | None = None, limit: int = 50, offset: int = 0,
                       snapshot: Snapshot | None = None, visibility: Visibility | None = None) -> DocumentPage:
        """The published snapshot's documents the caller may see, by id, one page at a time."""
        return self.documents.list(snapshot or self.snapshot(), domain=domain, limit=limit, offset=offset,
                                   access=groups_of(visibility))

    def get_document(self, doc_id: str, *, published: Snapshot | None,
                     visibility: Visibility | None = None) -> DocumentView:
        """`published`: the published snapshot, or None when there is none yet (`published_snapshot()`).
        A document the caller may not see is NotFound, as one that does not exist."""
        return self.documents.get(published, doc_id, visibility=visibility)

    # Writes take the caller's visibility too: a document it may not see is never replaced or deleted (an admin
    # key restricted to some groups manages those and the public documents only).
    def add_document(self, doc: NewDocument, *, published: Snapshot | None,
                     visibility: Visibility | None = None) -> DocumentWrite:
        return self.documents.add(published, doc, visibility=visibility)

    def replace_document(self, doc_id: str, doc: DocumentFields, *, published: Snapshot | None = None,
                         visibility: Visibility | None = None) -> DocumentWrite:
        return self.documents.replace(doc_id, doc, snapshot=published, visibility=visibility)

    def delete_document(self, doc_id: str, *, published: Snapshot | None,
                        visibility: Visibility | None = None) -> DocumentWrite:
        return self.documents.delete(published, doc_id, visibility=visibility)


_LIST_HINT = "see `rag index list` or GET /v1/admin/index/generations"


def _nonblank(value: str, field: str) -> str:
    v = (value or "").strip()
    if not v:
        raise InvalidInput(f"{field} must not be blank", field=field)
    return v


def _at_least_one(k: int, field: str) -> None:
    if k < 1:
        raise InvalidInput(f"{field} must be at least 1", field=field)


def _from_file(load, field: str = "path"):
    """`load()`, a file that is not there a NotFound."""
    try:
        return load()
    except FileNotFoundError as e:
        raise NotFound(str(e), field=field) from e
