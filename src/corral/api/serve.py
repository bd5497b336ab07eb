"""Run the app under uvicorn with a draining shutdown: on SIGTERM/SIGINT new requests get 503,
admitted ones finish (up to CORRAL_SHUTDOWN_TIMEOUT), then every runner process is stopped."""

from __future__ import annotations

import uvicorn

from corral.api.app import create_app
from corral.config import Settings


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, scheduler) -> None:
        super().__init__(config)
        self.scheduler = scheduler

    def handle_exit(self, sig, frame) -> None:
        self.scheduler.drain()
        super().handle_exit(sig, frame)


def serve(settings: Settings) -> None:
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                            timeout_graceful_shutdown=int(settings.shutdown_timeout))
    _DrainingServer(config, app.state.corral.scheduler).run()
