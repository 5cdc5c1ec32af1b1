"""Error responses: every failure is a JSON body with a one-line `detail` or `reason`."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from retrieval.errors import RetrievalError, error_codes
from retrieval.requests import InvalidRequest, Problem, explain, field_name


def _problem(error: dict[str, Any]) -> Problem:
    if error.get("type") == "json_invalid":
        # FastAPI reports ("body", <character offset>) and "JSON decode error".
        at = error["loc"][-1] if isinstance(error["loc"][-1], int) else None
        why = (error.get("ctx") or {}).get("error")
        where = f" (at character {at}{': ' + str(why) if why else ''})" if at is not None else ""
        return Problem("body", f"the body is not valid JSON{where}", "json_invalid")
    return Problem(field_name(error["loc"]), explain(error), error["type"])


def unprocessable(problems: list[Problem]) -> JSONResponse:
    """422 with one readable `reason` line plus the per-field list."""
    detail = [{"loc": [p.field], "msg": p.message, "type": p.kind} for p in problems]
    reason = "; ".join(f"{p.field}: {p.message}" for p in problems)
    return JSONResponse(status_code=422, content={"detail": detail, "reason": reason})


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return unprocessable([_problem(e) for e in exc.errors()])


async def domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RetrievalError)
    if isinstance(exc, InvalidRequest):
        return unprocessable(exc.problems)
    _exit_code, status = error_codes(exc)
    return JSONResponse(status_code=status, content={"detail": str(exc)})
