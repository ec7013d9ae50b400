"""The OpenAPI 3.1 document of the API, built from the msgspec schemas the server validates with.

The request bodies come from ``schemas`` through ``msgspec.json.schema_components``; this module
only says which endpoint takes which body, and what each one does.
"""
from __future__ import annotations

from typing import Any

import msgspec

from . import __version__, schemas
from .signing import REQUEST_HEADER

REF = "#/components/schemas/{name}"
COMPAT_HEADER = "x-channelstream-secret"
CLIENT_ENDPOINTS = ("/disconnect", "/listen")   # authorized by the conn_id, not signed
PROBES = ("/health", "/ready")                  # for load balancers and service managers

# path -> method -> (request body type or None, summary)
ENDPOINTS: dict[str, dict[str, tuple[Any, str]]] = {
    "/connect": {"POST": (schemas.ConnectBody,
                          "Create or update a user and open a connection to channels")},
    "/subscribe": {"POST": (schemas.SubscribeBody, "Join a connection to channels")},
    "/unsubscribe": {"POST": (schemas.SubscribeBody, "Take a connection out of channels")},
    "/message": {
        "POST": (schemas.MessageList, "Send messages to channels or users"),
        "PATCH": (schemas.EditList, "Edit sent messages"),
        "DELETE": (schemas.DeleteList, "Delete sent messages"),
    },
    "/user_state": {"POST": (schemas.UserStateBody, "Change a user's state")},
    "/channel_config": {"POST": (schemas.ChannelConfigs,
                                 "Create channels or replace their settings")},
    "/info": {
        "GET": (None, "Every channel with history, users and full states"),
        "POST": (schemas.InfoBody, "Channels, members, history and user states, filtered, "
                                   "or a page at a time"),
    },
    "/admin/admin.json": {
        "GET": (None, "Server statistics, summed and per shard"),
        "POST": (None, "Server statistics, summed and per shard"),
    },
    "/disconnect": {
        "GET": (None, "Close a connection (conn_id in the query)"),
        "POST": (schemas.DisconnectBody, "Close a connection"),
    },
    "/listen": {"GET": (None, "Long polling: the next batch of envelopes for a connection")},
    "/health": {"GET": (None, "Liveness: 200 {\"status\": \"ok\"} while the API port serves")},
    "/ready": {"GET": (None, "Readiness: 200 when every shard answers within a second")},
}
NOT_READY = ("A shard is restarting or does not answer, or the server is shutting down: "
             "{\"status\": \"not ready\", \"down\": {shard: why}}")
QUERY_CONN_ID = {"name": "conn_id", "in": "query", "required": True,
                 "schema": {"type": "string", "format": "uuid"}}
CALLBACK = {"name": "callback", "in": "query", "required": False,
            "description": "JSONP: answer `callback(<json>)`", "schema": {"type": "string"}}
OFFSETS = {"name": "offsets", "in": "query", "required": False,
           "description": "(new) `1`: channel messages also carry their `epoch` and `offset` "
                          "(the same on the websocket URL)",
           "schema": {"type": "string", "enum": ["0", "1", "true", "false"]}}
SINCE = {"name": "since", "in": "query", "required": False,
         "description": "(new) Resume (implies offsets=1; the same on the websocket URL): "
                        "URL-encoded JSON `{\"<channel>\": {\"epoch\": \"<epoch>\", \"offset\": "
                        "<last offset received>}}`. The answer starts with `{\"type\": "
                        "\"recovery\", \"channels\": {\"<channel>\": {\"recovered\": bool, "
                        "\"epoch\", \"offset\": <top>}}}`, then the missed messages in order "
                        "(`catchup: true`); `recovered: false`: the epoch changed or history is "
                        "too short, reload",
         "content": {"application/json": {"schema": {
             "type": "object", "additionalProperties": {"$ref": REF.format(name="Position")}}}}}
QUERY_PARAMETERS = {("/disconnect", "GET"): [QUERY_CONN_ID],
                    ("/listen", "GET"): [QUERY_CONN_ID, CALLBACK, OFFSETS, SINCE]}
ERRORS = {
    "401": "Bad signature: wrong secret, stale timestamp, or altered request",
    "403": "No signature, or the caller's IP is not in allow_posting_from",
    "422": "The body breaks the contract: {field: [message, ...]}",
}


def document() -> dict:
    """The whole OpenAPI document (it depends on nothing but the code: build it once)."""
    types = [body for methods in ENDPOINTS.values() for body, _ in methods.values() if body]
    bodies, components = msgspec.json.schema_components([*types, schemas.Position],
                                                        ref_template=REF)
    body_schemas = dict(zip(types, bodies))
    components["Errors"] = {"type": "object", "description": ERRORS["422"],
                            "additionalProperties": True}
    paths = {path: {method.lower(): _operation(path, method, body, summary, body_schemas)
                    for method, (body, summary) in methods.items()}
             for path, methods in ENDPOINTS.items()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "shardcast API", "version": __version__,
                 "description": "Channelstream 0.7 compatible HTTP API of the shardcast "
                                "websocket broker. Server API calls are signed with "
                                f"`{REQUEST_HEADER}` (or the Channelstream `{COMPAT_HEADER}`)."},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {
            "signature": {"type": "apiKey", "in": "header", "name": REQUEST_HEADER,
                          "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of "
                                         "'<t>.<METHOD>.<path?query>.' + body>"},
            "compat": {"type": "apiKey", "in": "header", "name": COMPAT_HEADER,
                       "description": "itsdangerous TimestampSigner signature (Channelstream)"},
        }},
        "security": [{"signature": []}, {"compat": []}],
    }


def _operation(path: str, method: str, body: Any, summary: str, body_schemas: dict) -> dict:
    operation: dict[str, Any] = {
        "summary": summary,
        "operationId": f"{method.lower()}_{path.strip('/').replace('/', '_').replace('.', '_')}",
        "responses": {"200": {"description": "OK",
                              "content": {"application/json": {"schema": {}}}}},
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": body_schemas[body]}}}
    if (path, method) in QUERY_PARAMETERS:
        operation["parameters"] = QUERY_PARAMETERS[(path, method)]
    if path in PROBES:
        operation["security"] = []
        if path == "/ready":
            operation["responses"]["503"] = {"description": NOT_READY}
        return operation
    errors = dict(ERRORS) if path not in CLIENT_ENDPOINTS else {"422": ERRORS["422"]}
    if path in CLIENT_ENDPOINTS:
        operation["security"] = []
        if path == "/listen":
            errors["401"] = "Unknown connection"
    for status, description in errors.items():
        operation["responses"][status] = {"description": description, "content": {
            "application/json": {"schema": {"$ref": REF.format(name="Errors")}}}}
    return operation
