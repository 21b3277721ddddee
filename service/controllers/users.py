"""Users (role admin): forget a user, the right to erasure."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, delete
from litestar.params import Parameter

from rag.application import Application
from service.errors import error_responses
from service.schemas import USER_ID_PATTERN


class UsersController(Controller):
    path = "/users"
    tags = ["users"]
    opt = {"role": "admin"}

    @delete("/{user_id:str}", status_code=200, sync_to_thread=True, summary="Forget a user",
            responses=error_responses(400, 401, 403, 404, 429, 503))
    def forget(self, application: Application,
               user_id: Annotated[str, Parameter(pattern=USER_ID_PATTERN)]) -> dict[str, Any]:
        """Removes the user, every event of theirs and their cached profile; co-engagement and trending are
        recomputed without them on the next request. The response says how many events went; 404 when nothing
        of the user is stored."""
        return application.forget_user(user_id)
