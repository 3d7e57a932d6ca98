"""The response value every handler returns, and the fixed Braze bodies.

Texts documented by Braze: "Max Input Length Exceeded", "Access Denied", the parse error, the
valid-data message, the 50-id messages. The 401/404/413/415/429/5xx texts are not documented
(braze-api.md §13.1); the ones here are the sandbox's choice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PARSE_ERROR = "Error while parsing request body. Please check your syntax."
VALID_DATA_REQUIRED = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."
MAX_INPUT_LENGTH = "Max Input Length Exceeded"
MAX_EXTERNAL_IDS = "The max number of external_ids and aliases per request was exceeded"
MAX_IDS = "The max number of ids per request was exceeded"


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop_connection: bool = False     # close the socket without answering (fault injection)

    def encoded(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body, separators=(",", ":")).encode()


def message(status: int, text: str, **extra: Any) -> Response:
    return Response(status, {"message": text, **extra})


def unauthorized() -> Response:
    return message(401, "Invalid API key")


def access_denied() -> Response:
    return message(403, "Access Denied")


def not_found() -> Response:
    return message(404, "Not Found")


def too_large() -> Response:
    return message(413, "Payload Too Large")


def unsupported_media_type() -> Response:
    return message(415, "Unsupported Media Type: Content-Type must be application/json")


def parse_error() -> Response:
    return message(400, PARSE_ERROR)


def rate_limited() -> Response:
    return message(429, "Rate limit exceeded")


SERVER_ERRORS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def server_error(status: int) -> Response:
    return message(status, SERVER_ERRORS[status])


def catalog_errors(status: int, errors: list[dict[str, Any]]) -> Response:
    """Catalog envelope: {"errors":[{"id","message","parameters","parameter_values"}],"message":"Invalid Request"}."""
    return Response(status, {"errors": errors, "message": "Invalid Request"})


def catalog_error(
    error_id: str, text: str, parameters: list[str] | None = None, values: list[Any] | None = None
) -> dict[str, Any]:
    return {"id": error_id, "message": text, "parameters": parameters or [], "parameter_values": values or []}
