"""``POST /v1/events``: what runtimes report (heartbeats, cost ticks, tool-call results).

A runtime token sends events for its tenant's instances (an instance-scoped token: its own);
``decisions.events`` stores them, and the decider hears of it so a cost tick counts in this
process's next decision.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations.
from typing import Any, Literal

import fastapi
import pydantic

from reconciler import errors
from reconciler.decisions import events
from reconciler.server import auth, services
from reconciler.state import database

__all__ = ["EventBody", "router"]

router = fastapi.APIRouter()


class EventBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    type: Literal["HEARTBEAT", "COST", "TOOL_RESULT"]
    instance: str


@router.post("/v1/events")
def post_event(request: fastapi.Request, body: EventBody, who: auth.Who) -> dict[str, Any]:
    who.runtime_only("sending events")
    if not who.may_act_on(who.tenant, body.instance):
        raise errors.Forbidden(f"token {who.name!r} may not send events for instance {body.instance!r}")
    served = services.of(request)
    with database.transaction(served.db) as connection:
        result = events.record(connection, who.tenant, body.model_dump(), served.clock.now())
    served.decider.invalidate()  # a cost tick counts in this process's next decision
    return result
