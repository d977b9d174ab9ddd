"""The OpenAPI 3 document of the admin API, served at GET /openapi.json."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from pyproxy.admin import poolstats
from pyproxy.admin.bodies import IDENT_MAX_BYTES
from pyproxy.admin.dashboard import FILES as DASHBOARD_FILES
from pyproxy.config import MODES, POOL_NAME_MAX_LEN, POOL_NAME_MIN_LEN

API_VERSION = "1.0.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"x-request-id": {"$ref": "#/components/headers/x-request-id"}},
        "content": {"application/json": {"schema": schema}},
    }


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


NO_CONTENT = {
    "description": "The action was successful and the response body is empty.",
    "headers": {"x-request-id": {"$ref": "#/components/headers/x-request-id"}},
}
TOO_MANY_FAILURES = _error(
    "Too many wrong tokens from this client address recently ([proxy] auth_failure_limit within "
    "auth_failure_window): refused, even with the right token, until Retry-After has passed."
)
TOO_MANY_FAILURES["headers"] = {
    **TOO_MANY_FAILURES["headers"],
    "retry-after": {
        "description": "Seconds until this address may try again.",
        "schema": {"type": "integer", "minimum": 1},
    },
}
ERRORS_READ = {
    "401": _error("Missing or wrong bearer token."),
    "404": _error("Unknown cluster or pool."),
    "429": TOO_MANY_FAILURES,
    "default": _error("Any other error (malformed request, unexpected server error)."),
}
ERRORS_WRITE = {
    "400": _error("Malformed JSON, a body that is not a JSON object, or a wrong Content-Type."),
    **ERRORS_READ,
    "413": _error("The request body is larger than 64 KiB."),
    "422": _error("The request is well-formed but cannot be applied; the message says why."),
    "500": _error("The change could not be saved; nothing was changed."),
}

CLUSTER_PARAM = {
    "name": "database_cluster_uuid",
    "in": "path",
    "required": True,
    "description": "The cluster id from the configuration file.",
    "schema": {"type": "string"},
}
POOL_PARAM = {
    "name": "pool_name",
    "in": "path",
    "required": True,
    "description": "The pool name (percent-encoded in the path).",
    "schema": {"type": "string"},
}

NAME_SCHEMA = {
    "type": "string",
    "minLength": POOL_NAME_MIN_LEN,
    "maxLength": POOL_NAME_MAX_LEN,
    "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
    "description": "Unique across the proxy; clients use it as the database name.",
}
SETTINGS = {
    "mode": {"type": "string", "enum": list(MODES)},
    "size": {
        "type": "integer",
        "minimum": 1,
        "description": "Server connections; the cluster's pools share its connection budget.",
    },
    "db": {
        "type": "string",
        "minLength": 1,
        "maxLength": IDENT_MAX_BYTES,
        "description": "A database that exists on the cluster.",
    },
    "user": {
        "type": "string",
        "description": "A configured user of the cluster; empty or absent: each client's own user.",
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "message": {"type": "string"},
            "request_id": {"type": "string"},
        },
        "required": ["id", "message"],
    },
    "Connection": {
        "type": "object",
        "properties": {
            "uri": {"type": "string"},
            "database": {"type": "string"},
            "host": {"type": "string"},
            "port": {"type": "integer"},
            "user": {"type": "string"},
            "password": {
                "type": "string",
                "description": "only when the pool's user has a plaintext password written in "
                "the config file (never a SCRAM verifier, an md5 hash or password_env)",
            },
            "ssl": {"type": "boolean"},
        },
        "required": ["uri", "database", "host", "port", "ssl"],
    },
    "Pool": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "mode": {"type": "string", "enum": list(MODES)},
            "size": {"type": "integer"},
            "db": {"type": "string"},
            "user": {"type": "string"},
            "connection": _ref("Connection"),
            "source": {"type": "string", "enum": ["config", "api"]},
        },
        "required": ["name", "mode", "size", "db", "user", "connection", "source"],
    },
    "PoolCreate": {
        "type": "object",
        "properties": {"name": NAME_SCHEMA, **SETTINGS},
        "required": ["name", "mode", "size", "db"],
    },
    "PoolUpdate": {
        "type": "object",
        "properties": SETTINGS,
        "required": ["mode", "size", "db"],
    },
    "Cluster": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "engine": {"type": "string", "enum": ["pg"]},
            "status": {"type": "string"},
            "num_nodes": {"type": "integer"},
            "host": {"type": "string"},
            "port": {"type": "integer"},
            "connection_budget": {"type": "integer"},
            "pools_size_sum": {"type": "integer"},
            "pools_size_free": {"type": "integer"},
            "connections_in_use": {"type": "integer"},
            "users": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"],
                },
            },
            "pools": {"type": "array", "items": {"type": "string"}},
            "connection": {
                "type": "object",
                "properties": {
                    "host": {"type": "string"},
                    "port": {"type": "integer"},
                    "ssl": {"type": "boolean"},
                },
                "required": ["host", "port", "ssl"],
            },
        },
        "required": [
            "id",
            "name",
            "engine",
            "host",
            "port",
            "connection_budget",
            "pools_size_sum",
            "pools_size_free",
            "connections_in_use",
        ],
    },
}


_POOL_ARGS = {
    "database_cluster_uuid": "$request.path.database_cluster_uuid",
    "pool_name": "$response.body#/pool/name",
}
POOL_LINKS = {
    verb: {"operationId": f"databases_{verb.lower()}_connectionPool", "parameters": _POOL_ARGS}
    for verb in ("Get", "Update", "Delete")
}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


def _object(key: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {key: schema}, "required": [key]}


PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "Liveness check",
            "security": [],
            "responses": {
                "200": _json(_object("status", {"type": "string", "enum": ["ok"]}), "Running.")
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics: latency histograms, counters and gauges per pool",
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format 0.0.4.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": ERRORS_READ["401"],
                "429": ERRORS_READ["429"],
            },
        }
    },
    "/v2/databases/{database_cluster_uuid}": {
        "parameters": [CLUSTER_PARAM],
        "get": {
            "operationId": "databases_get_cluster",
            "summary": "Retrieve a cluster: its connection budget and how much of it is used",
            "responses": {
                "200": _json(_object("database", _ref("Cluster")), "The cluster."),
                **ERRORS_READ,
            },
        },
    },
    "/v2/databases/{database_cluster_uuid}/pools": {
        "parameters": [CLUSTER_PARAM],
        "get": {
            "operationId": "databases_list_connectionPools",
            "summary": "List connection pools",
            "responses": {
                "200": _json(
                    _object("pools", {"type": "array", "items": _ref("Pool")}),
                    "The cluster's pools, in creation order.",
                ),
                **ERRORS_READ,
            },
        },
        "post": {
            "operationId": "databases_add_connectionPool",
            "summary": "Add a connection pool (live at once, kept across restarts)",
            "requestBody": _body("PoolCreate"),
            "responses": {
                "201": {
                    **_json(_object("pool", _ref("Pool")), "The new pool."),
                    "links": POOL_LINKS,
                },
                **ERRORS_WRITE,
            },
        },
    },
    "/v2/databases/{database_cluster_uuid}/pools/{pool_name}": {
        "parameters": [CLUSTER_PARAM, POOL_PARAM],
        "get": {
            "operationId": "databases_get_connectionPool",
            "summary": "Retrieve a connection pool",
            "responses": {"200": _json(_object("pool", _ref("Pool")), "The pool."), **ERRORS_READ},
        },
        "put": {
            "operationId": "databases_update_connectionPool",
            "summary": "Change a pool's mode, size, db and user (pools from the API only)",
            "description": "A missing user keeps the pool's user; an empty one clears it.",
            "requestBody": _body("PoolUpdate"),
            "responses": {"204": NO_CONTENT, **ERRORS_WRITE},
        },
        "delete": {
            "operationId": "databases_delete_connectionPool",
            "summary": "Delete a pool and end its clients (pools from the API only)",
            "responses": {
                "204": NO_CONTENT,
                **ERRORS_READ,
                "422": ERRORS_WRITE["422"],
                "500": ERRORS_WRITE["500"],
            },
        },
    },
}


PAUSE_BODY = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "timeout_seconds": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "default": 30,
                        "description": "How long to wait for running transactions.",
                    }
                },
                "additionalProperties": False,
            }
        }
    },
}
_NAMES = {"type": "array", "items": {"type": "string"}}


def _pause_path(scope: str, params: list[dict[str, Any]], op_scope: str) -> dict[str, Any]:
    return {
        "parameters": params,
        "post": {
            "operationId": f"databases_pause_{op_scope}",
            "summary": f"Pause {scope}: let running transactions finish, then hold new queries",
            "description": (
                "New queries wait in the queue (query_wait_timeout does not run while paused) "
                "until resume; transactions already running finish, then idle server "
                "connections are closed. Session-mode clients keep their server until they "
                "leave. If the transactions do not finish within timeout_seconds, the pause is "
                "undone and 503 returned. Nothing is lost."
            ),
            "requestBody": PAUSE_BODY,
            "responses": {
                "200": _json(_object("paused", _NAMES), "The pools now paused."),
                "400": ERRORS_WRITE["400"],
                **ERRORS_READ,
                "503": _error("Transactions were still running at the timeout; pause undone."),
            },
        },
    }


def _resume_path(scope: str, params: list[dict[str, Any]], op_scope: str) -> dict[str, Any]:
    return {
        "parameters": params,
        "post": {
            "operationId": f"databases_resume_{op_scope}",
            "summary": f"Resume {scope}: serve the queries held by pause",
            "responses": {
                "200": _json(_object("resumed", _NAMES), "The pools resumed."),
                **ERRORS_READ,
            },
        },
    }


_CLUSTER = "/v2/databases/{database_cluster_uuid}"
_POOL = "/v2/databases/{database_cluster_uuid}/pools/{pool_name}"
PATHS.update(
    {
        f"{_CLUSTER}/pause": _pause_path("every pool of a cluster", [CLUSTER_PARAM], "cluster"),
        f"{_CLUSTER}/resume": _resume_path("every pool of a cluster", [CLUSTER_PARAM], "cluster"),
        f"{_POOL}/pause": _pause_path("a pool", [CLUSTER_PARAM, POOL_PARAM], "connectionPool"),
        f"{_POOL}/resume": _resume_path("a pool", [CLUSTER_PARAM, POOL_PARAM], "connectionPool"),
    }
)

# The dashboard: its page (no token: it asks for one), the clusters to choose from, live figures.
SCHEMAS.update(poolstats.SCHEMAS)
_PAGE = {
    "description": "A file of the page.",
    "content": {"*/*": {"schema": {"type": "string"}}},
}
PATHS.update(
    {
        "/": {
            "get": {
                "operationId": "dashboard",
                "summary": "The dashboard page: pools, live figures, create/change/delete",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The page; it loads only files from /static/.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/static/{file}": {
            "parameters": [
                {
                    "name": "file",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": list(DASHBOARD_FILES)},
                }
            ],
            "get": {
                "operationId": "dashboard_file",
                "summary": "A script, style sheet or icon of the dashboard page",
                "security": [],
                "responses": {"200": _PAGE, "404": _error("No such file.")},
            },
        },
        "/v2/databases": {
            "get": {
                "operationId": "databases_list_clusters",
                "summary": "List the clusters (from the configuration file)",
                "responses": {
                    "200": _json(
                        _object("databases", {"type": "array", "items": _ref("Cluster")}),
                        "Every configured cluster.",
                    ),
                    "401": ERRORS_READ["401"],
                    "429": ERRORS_READ["429"],
                },
            }
        },
        f"{_CLUSTER}/stats": {
            "parameters": [CLUSTER_PARAM],
            "get": {
                **poolstats.GET_STATS,
                "responses": {
                    "200": _json(_object("stats", _ref("ClusterStats")), "The figures."),
                    **ERRORS_READ,
                },
            },
        },
    }
)


def document(auth: bool = True, cluster_ids: Sequence[str] = ()) -> dict[str, Any]:
    """The OpenAPI document as a dict.

    ``auth=False`` when the API runs without a token; the first of ``cluster_ids`` (the
    configured clusters) is given as the example cluster id.
    """
    paths = copy.deepcopy(PATHS)
    if cluster_ids:
        for item in paths.values():
            for param in item.get("parameters", []):
                if param["name"] == "database_cluster_uuid":
                    param["example"] = cluster_ids[0]
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "pyproxy admin API",
            "version": API_VERSION,
            "description": (
                "Connection pools of a pyproxy instance, compatible with the connection-pools "
                "endpoints of DigitalOcean's Managed Databases API."
            ),
        },
        "security": [{"bearer_auth": []}] if auth else [],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer_auth": {"type": "http", "scheme": "bearer"}},
            "headers": {
                "x-request-id": {
                    "description": "A unique id of this request.",
                    "schema": {"type": "string", "format": "uuid"},
                }
            },
            "schemas": SCHEMAS,
        },
    }


def document_bytes(auth: bool = True, cluster_ids: Sequence[str] = ()) -> bytes:
    return json.dumps(document(auth, cluster_ids), indent=1).encode()
