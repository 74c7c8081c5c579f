"""The REST API's routers."""

from .duplicates import router as duplicates_router
from .folders import router as folders_router
from .health import router as health_router
from .images import router as images_router
from .jobs import router as jobs_router
from .ocr import router as ocr_router
from .removed import router as removed_router
from .search import router as search_router
from .session import router as session_router

__all__ = [
    "duplicates_router",
    "folders_router",
    "health_router",
    "images_router",
    "jobs_router",
    "ocr_router",
    "removed_router",
    "search_router",
    "session_router",
]
