"""Run the app under uvicorn; SIGTERM drains the worker and exits within the grace period."""

from __future__ import annotations

from dsa.serve.app import create_app
from dsa.serve.config import ServerConfig


def serve(sm, config: ServerConfig | None = None, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info") -> None:
    import uvicorn

    config = config or ServerConfig()
    app = create_app(sm, config)
    worker = app.state.worker

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # new requests get 503 at once; running ones finish, or end with an error event and
            # [DONE] shortly before uvicorn's grace period closes their connections
            worker.drain(within=max(0.5, config.shutdown_grace_s - 1.5))
            super().handle_exit(sig, frame)

    DrainingServer(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                  timeout_graceful_shutdown=config.shutdown_grace_s)).run()
