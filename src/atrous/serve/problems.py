"""The service's refusals: one JSON shape, ``{"error": {"status", "code", "message"}}``, for
``POST /v1/segment``'s responses and for the camera stream's per-frame replies alike."""

from __future__ import annotations

from typing import Any

__all__ = ["HTTPProblem", "internal_error"]


class HTTPProblem(Exception):
    """A request the service refuses: HTTP ``status``, a short ``code`` and a message."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body: ``{"error": {"status", "code", "message"}}``."""
        return {"error": {"status": self.status, "code": self.code, "message": self.message}}

    def response(self) -> Any:
        """The body as a Starlette ``JSONResponse`` with the status and headers."""
        from starlette.responses import JSONResponse

        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def internal_error(e: BaseException) -> HTTPProblem:
    """The 500 of an unexpected failure: its type and the start of its message, never a
    traceback."""
    return HTTPProblem(
        500,
        "internal_error",
        f"the model failed on this image ({type(e).__name__}: {str(e)[:200]})",
    )
