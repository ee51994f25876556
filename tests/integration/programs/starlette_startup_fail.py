"""
A Starlette app whose lifespan startup raises: Starlette answers
C{lifespan.startup.failed} with the whole traceback as its message.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from starlette.applications import Starlette


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    raise ValueError("no database at db:5432")
    yield


app = Starlette(lifespan=lifespan)
