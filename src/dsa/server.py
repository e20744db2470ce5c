"""Compatibility shim: the server lives in `dsa.serve` (app, worker, policy, limits)."""

from dsa.serve import ApiKey, ServerConfig, create_app, load_api_keys, serve

__all__ = ["ApiKey", "ServerConfig", "create_app", "load_api_keys", "serve"]
