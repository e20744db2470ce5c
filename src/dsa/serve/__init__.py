"""OpenAI-compatible HTTP server over a `SafetyModel` (see `dsa.serve.app` for the routes and the
operator policy, `dsa.serve.worker` for the model worker and dynamic batching).

The app and its runner need the [serve] extra (fastapi, uvicorn) and are imported on first use;
the configuration and the worker do not, so `dsa serve --help` and the benchmarks run without it.
"""

from dsa.serve.config import ApiKey, ServerConfig, load_api_keys

__all__ = ["ApiKey", "ServerConfig", "create_app", "load_api_keys", "serve"]


def __getattr__(name: str):
    if name == "create_app":
        from dsa.serve.app import create_app

        return create_app
    if name == "serve":
        from dsa.serve.run import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
