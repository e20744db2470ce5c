"""The OpenAPI document of the routes: the request bodies they read themselves, and no 422."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI


def request_body_spec(model) -> dict:
    # the routes read their bodies themselves (size limit, error shape), so FastAPI cannot infer them
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def document_bodies(app: FastAPI, models) -> None:
    """Put the request models' JSON schemas into the OpenAPI document (for clients and fuzzers).
    FastAPI's automatic 422 is dropped: a bad request is a 400 here."""
    default = app.openapi

    def openapi() -> dict:
        doc = default()
        for ops in doc.get("paths", {}).values():
            for op in ops.values():
                op.get("responses", {}).pop("422", None)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            if model.__name__ not in schemas:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
        return doc

    app.openapi = openapi
