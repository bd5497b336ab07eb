"""GET /metrics: the scheduler's Prometheus registry."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.corral.scheduler.metrics.render(), media_type=CONTENT_TYPE_LATEST)
