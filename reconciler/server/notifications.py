"""``GET /v1/notifications``: what the fleet told its NotificationChannels, and whether it arrived.

The notifications of the token's tenant, newest first, as ``armctl notifications list`` shows them
(``notifications.outbox``): event, object, environment, channel, summary and delivery status
(attempts, last HTTP status and error, next attempt, delivery time). Filters: ``status``,
``channel``, ``event``; a page is ``limit`` rows, the next one ``before`` the last id seen. An
operator token reads them: they name approvals and emergency controls, which runtimes and
evaluation pipelines have no business reading.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations.
from typing import Annotated, Any, Literal

import fastapi
import pydantic

from reconciler.notifications import outbox
from reconciler.server import auth, services
from reconciler.state import database

__all__ = ["router"]

router = fastapi.APIRouter()


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


NotificationStatus = Annotated[Literal["PENDING", "DELIVERED", "FAILED", "ALL"], pydantic.BeforeValidator(_upper)]


@router.get("/v1/notifications")
def list_notifications(
    request: fastapi.Request,
    who: auth.Who,
    status: NotificationStatus = "ALL",
    channel: str | None = None,
    event: str | None = None,
    limit: Annotated[int, fastapi.Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, fastapi.Query(ge=1)] = None,
) -> dict[str, Any]:
    auth.operator_of(who)
    with database.reading(services.of(request).db) as connection:
        rows = outbox.list_notifications(
            connection,
            tenant=who.tenant,
            status=None if status == "ALL" else status,
            channel=channel,
            event=event.upper() if event else None,
            limit=limit,
            before=before,
        )
    return {"notifications": rows, "next": rows[-1]["id"] if len(rows) == limit else None}
