"""Argo CD's API errors: gRPC status codes, their HTTP mapping and the error body shape.

Argo CD serves its REST API through grpc-gateway v1, whose default error handler answers
``{"error": msg, "code": <grpc code>, "message": msg}`` (the swagger's ``runtimeError``) with
the HTTP status ``runtime.HTTPStatusFromCode`` gives for the gRPC code.
"""

from __future__ import annotations

import enum
from typing import Any


class Code(enum.IntEnum):
    """gRPC status codes (google.golang.org/grpc/codes)."""

    OK = 0
    CANCELED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# grpc-gateway v1.16 runtime.HTTPStatusFromCode (the version Argo CD pins).
_HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELED: 408,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.UNAUTHENTICATED: 401,
    Code.RESOURCE_EXHAUSTED: 429,
    # Deliberately not 412: grpc-gateway maps FailedPrecondition to 400.
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
}

# Messages Argo CD answers with, copied from its sources (argoproj/argo-cd).
NO_SESSION = "no session information"  # server/server.go ErrNoSession
PERMISSION_DENIED = "permission denied"  # common/common.go PermissionDeniedAPIError
ANOTHER_OPERATION = "another operation is already in progress"  # util/argo/argo.go
SYNC_WINDOW_BLOCKED = "cannot sync: blocked by sync window"  # server/application/application.go


class ApiError(Exception):
    """An error answered to an API client, carrying its gRPC code."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self.code]

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "code": int(self.code), "message": self.message}


def not_found(name: str) -> ApiError:
    """Argo CD's 404 for an application (only answered when the request names a project)."""
    return ApiError(Code.NOT_FOUND, f'applications.argoproj.io "{name}" not found')


class EmulatorConfigError(Exception):
    """The apps file or an emulator option is wrong; the message says where."""
