"""Run the app under uvicorn; SIGTERM drains the worker and exits within the grace period."""

from __future__ import annotations

import time

from dsa.extras import needs_extra
from dsa.serve.app import create_app
from dsa.serve.config import ServerConfig


def serve(sm, config: ServerConfig | None = None, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info") -> None:
    with needs_extra("serve", "HTTP server (dsa.serve)"):
        import uvicorn

    config = config or ServerConfig()
    app = create_app(sm, config)
    worker = app.state.worker
    within = max(0.5, config.shutdown_grace_s - 1.5)

    class DrainingServer(uvicorn.Server):
        """SIGTERM drains before uvicorn shuts down. The port stays open meanwhile, so a new
        request gets a 503 (not a refused connection); running ones finish, or end with an error
        event and [DONE] at the drain deadline. Then uvicorn closes the port and the connections
        (its own grace period). A second signal shuts down at once."""

        drain_until: float | None = None
        signalled: tuple | None = None

        def handle_exit(self, sig, frame) -> None:
            if self.signalled is not None:
                super().handle_exit(sig, frame)
                return
            self.signalled, self.drain_until = (sig, frame), time.monotonic() + within
            worker.drain(within=within)

        async def on_tick(self, counter: int) -> bool:
            if self.signalled is not None and not self.should_exit:
                # the deadline ends every request, so in_flight reaches 0; the margin covers a
                # worker (vLLM) whose deadline runs on this loop
                if not worker.in_flight() or time.monotonic() > self.drain_until + 0.5:
                    super().handle_exit(*self.signalled)
            return await super().on_tick(counter)

    DrainingServer(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                  timeout_graceful_shutdown=config.shutdown_grace_s)).run()
