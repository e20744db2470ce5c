"""OpenAI-compatible HTTP server over a `SafetyModel` (see `dsa.serve.app` for the routes and the
operator policy, `dsa.serve.worker` for the model worker and dynamic batching)."""

from dsa.serve.app import create_app
from dsa.serve.config import ApiKey, ServerConfig, load_api_keys
from dsa.serve.run import serve

__all__ = ["ApiKey", "ServerConfig", "create_app", "load_api_keys", "serve"]
