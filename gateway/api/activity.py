"""``GET /admin/activity``: the latest requests, newest first, as the gateway logged them (one
``ActivityRecord`` each, gateway/activity.py). Admin token; no orchestrator needed."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from contract.activity import ActivityList

from .admin import require_admin_token

router = APIRouter(prefix="/admin", tags=["Admin"], dependencies=[Depends(require_admin_token)])


@router.get("/activity", response_model=ActivityList, summary="The latest requests, newest first")
async def activity(request: Request,
                   model: str | None = Query(None, description="Only this model's requests (its name, not an alias)."),
                   limit: int = Query(100, ge=1, le=100_000, description="At most this many.")) -> ActivityList:
    log = request.app.state.gateway.activity
    return ActivityList(records=log.latest(model, limit), kept=log.size)
