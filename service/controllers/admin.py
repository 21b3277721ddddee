"""Admin (role admin): rebuild the index as a background job, follow jobs, list generations, roll back."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import Body, Parameter

from rag.access import KeyActivity
from rag.application import Application, Rollback, SnapshotInfo
from rag.jobs import Job
from service.errors import error_responses
from service.request_log import GENERATION_ID_KEY
from service.schemas import RebuildRequest, RollbackRequest


class AdminController(Controller):
    path = "/admin"
    tags = ["admin"]
    opt = {"role": "admin"}

    @post("/index/rebuild", status_code=202, sync_to_thread=True, summary="Start an index rebuild (background job)",
          responses=error_responses(400, 401, 403, 409, 413, 429))
    def rebuild(self, application: Application,
                data: Annotated[RebuildRequest | None, Body(description="Optional: sources, embedder")] = None
                ) -> Job:
        """202 with the job; follow it at `GET /v1/admin/jobs/{id}`. 409 (with the running job) while another
        rebuild runs. Default sources: the documents store plus the published generation's sources; `sources`
        may only name those (and `settings.source_dirs`), `embedder` a named or configured one. When nothing changed
        since the published generation the job succeeds with `unchanged: true` and publishes nothing; `force`
        builds a new generation anyway."""
        return application.start_rebuild(**(data or RebuildRequest()).arguments())

    @get("/jobs", sync_to_thread=True, summary="Recent jobs", responses=error_responses(400, 401, 403, 429))
    def list_jobs(self, application: Application, limit: Annotated[int, Parameter(ge=1, le=200)] = 20) -> list[Job]:
        return application.recent_jobs(limit)

    @get("/jobs/{job_id:str}", sync_to_thread=True, summary="One job: state, progress, report, error",
         responses=error_responses(400, 401, 403, 404, 429))
    def get_job(self, application: Application,
                job_id: Annotated[str, Parameter(max_length=128, description="Job id.")]) -> Job:
        return application.job(job_id)

    @get("/index/generations", sync_to_thread=True, summary="Index generations (manifests), newest first",
         responses=error_responses(401, 403, 429))
    def generations(self, application: Application) -> list[SnapshotInfo]:
        return application.snapshots()

    @get("/keys", sync_to_thread=True, summary="API keys (by id, never the key) with their last use",
         responses=error_responses(401, 403, 429))
    def keys(self, application: Application, state: State) -> list[KeyActivity]:
        """Each configured key: its id (the configured `id`, else a hash of the key), role, groups, when it was
        last used and how many requests it made (counted since the state database began recording)."""
        return application.key_activity(state.auth.principals)

    @post("/index/rollback", status_code=200, sync_to_thread=True, summary="Publish an older generation",
          responses=error_responses(400, 401, 403, 404, 413, 429, 503))
    def rollback(self, data: RollbackRequest, application: Application, request: Request) -> Rollback:
        result = application.rollback(data.generation_id)
        request.scope["state"][GENERATION_ID_KEY] = result.published
        return result
