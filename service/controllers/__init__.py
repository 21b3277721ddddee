"""One controller per resource. `API_CONTROLLERS` are mounted under /v1 behind the API-key guard. Each method
parses its input, makes one call into `rag.application.Application`, and returns the typed result."""

from service.controllers.admin import AdminController
from service.controllers.ask import AskController
from service.controllers.documents import DocumentsController
from service.controllers.health import HealthController
from service.controllers.recommend import RecommendController
from service.controllers.search import SearchController
from service.controllers.summarize import SummarizeController
from service.controllers.users import UsersController

API_CONTROLLERS = [AskController, SearchController, SummarizeController, RecommendController, DocumentsController,
                   AdminController, UsersController]

__all__ = ["API_CONTROLLERS", "HealthController"]
