"""Admin (role admin): rebuild the index as a background job, follow jobs, list generations, roll back."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from litestar import Controller, Request, Response, get, post
from litestar.params import Body, Parameter

from rag import snapshot_files
from rag.engine import Engine
from rag.published import NoSnapshot
from service.errors import GENERATION_ID_KEY, ServiceError, bad_request, error_responses
from service.jobs import JobConflict, JobManager, SourceProblem, allowed_embedders
from service.schemas import GenerationOut, JobOut, RebuildRequest, RollbackRequest, RollbackResponse


def _job(d: dict) -> JobOut:
    return JobOut(**d)


def _check_embedder(settings, spec: str) -> None:
    allowed = allowed_embedders(settings)
    if spec not in allowed:
        raise bad_request(f"embedder {spec[:200]!r} is not one of {', '.join(allowed)} (configure others with "
                          "settings.embedder)", field="embedder")


class AdminController(Controller):
    path = "/admin"
    tags = ["admin"]
    opt = {"role": "admin"}

    @post("/index/rebuild", status_code=202, summary="Start an index rebuild (background job)",
          responses=error_responses(400, 401, 403, 409, 413, 429))
    async def rebuild(self, jobs: JobManager, engine: Engine,
                      data: Annotated[RebuildRequest | None, Body(description="Optional: sources, embedder")] = None
                      ) -> JobOut:
        """202 with the job; follow it at `GET /v1/admin/jobs/{id}`. 409 (with the running job) while another
        rebuild runs. Default sources: the documents store plus the published generation's sources; `sources`
        may only name those (and `settings.source_dirs`), `embedder` a named or configured one. When nothing changed
        since the published generation the job succeeds with `unchanged: true` and publishes nothing; `force`
        builds a new generation anyway."""
        req = data or RebuildRequest()
        if req.embedder is not None:
            _check_embedder(engine.settings, req.embedder)
        try:
            job = await anyio.to_thread.run_sync(
                lambda: jobs.start_rebuild(req.sources, req.embedder, force=req.force))
        except SourceProblem as e:
            if e.status == 409:
                raise ServiceError(409, str(e), code="nothing_to_index", field=e.field) from e
            raise bad_request(str(e), field=e.field) from e
        except JobConflict as e:
            raise ServiceError(409, str(e), code="job_running", extra={"job": e.job} if e.job else None) from e
        return _job(job)

    @get("/jobs", sync_to_thread=True, summary="Recent jobs", responses=error_responses(400, 401, 403, 429))
    def list_jobs(self, jobs: JobManager, limit: Annotated[int, Parameter(ge=1, le=200)] = 20) -> list[JobOut]:
        return [_job(j) for j in jobs.list(limit)]

    @get("/jobs/{job_id:str}", sync_to_thread=True, summary="One job: state, progress, report, error",
         responses=error_responses(400, 401, 403, 404, 429))
    def get_job(self, jobs: JobManager,
                job_id: Annotated[str, Parameter(max_length=128, description="Job id.")]) -> JobOut:
        job = jobs.get(job_id)
        if job is None:
            raise ServiceError(404, f"no job {job_id!r}", code="not_found", field="job_id")
        return _job(job)

    @get("/index/generations", sync_to_thread=True, summary="Index generations (manifests), newest first",
         responses=error_responses(401, 403, 429))
    def generations(self, engine: Engine) -> list[GenerationOut]:
        home = engine.settings.home_path
        current = snapshot_files.read_pointer(home)
        loaded = engine.published.loaded_id
        out = []
        for m in snapshot_files.list_snapshots(home):
            mj = snapshot_files.manifest_json(m)
            out.append(GenerationOut(id=m.id, published=m.id == current, loaded=m.id == loaded,
                                     created_at=m.created_at, embedder=mj["embedder"], counts=mj["counts"],
                                     index_type=m.index_type, sources=list(m.sources), parent=m.parent,
                                     build_seconds=m.build_seconds, manifest=mj))
        return out

    @post("/index/rollback", status_code=200, summary="Publish an older generation",
          responses=error_responses(400, 401, 403, 404, 413, 429, 503))
    async def rollback(self, data: RollbackRequest, engine: Engine, request: Request) -> Response[RollbackResponse]:
        home = engine.settings.home_path

        def do() -> RollbackResponse:
            previous = snapshot_files.read_pointer(home)
            try:
                snapshot_files.publish(home, data.generation_id)
            except snapshot_files.SnapshotNotFound as e:
                raise ServiceError(404, f"{e}; see GET /v1/admin/index/generations", code="not_found",
                                   field="generation_id") from e
            try:
                snapshot = engine.published.refresh()  # load it now: the next request already runs on it
            except NoSnapshot:
                snapshot = None
            except Exception as e:  # noqa: BLE001
                snapshot_files.publish(home, previous) if previous else None
                raise ServiceError(503, f"generation {data.generation_id} could not be loaded ({e}); the "
                                        f"pointer was put back to {previous}", code="unavailable") from e
            if snapshot is not None:
                request.scope.setdefault("state", {})[GENERATION_ID_KEY] = snapshot.id
            return RollbackResponse(published=data.generation_id, previous=previous)

        return Response(await anyio.to_thread.run_sync(do))
