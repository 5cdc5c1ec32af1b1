"""The search request, defined once: every front end (HTTP API, page, CLI, MCP, retrievers) parses
its input with `parse_search_request` and only translates `InvalidRequest` into its own error form
(422 with a reason, argparse-style exit 2, a one-line MCP tool error, ValueError).

Static rules (types, non-negative numbers, ISO dates in order, a non-blank query) live on the model;
the bounds an operator may change (query length, page size, offset) come from `RequestLimits`,
which `Settings.request_limits()` builds from the environment.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from retrieval.errors import UsageError
from retrieval.models import Filters, Mode

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def iso_date(value: str) -> str:
    """`value` stripped, when it is a calendar date written `YYYY-MM-DD`; else ValueError saying so."""
    value = value.strip()
    try:
        if not _DATE.match(value):
            raise ValueError
        dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"must be a date YYYY-MM-DD, got {value[:40]!r}") from None
    return value


@dataclass(frozen=True)
class RequestLimits:
    """Operator-set bounds of a search request (see `Settings`)."""

    max_query_chars: int = 1000
    max_limit: int = 100
    max_offset: int = 10_000


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: the field and a readable message."""

    field: str
    message: str
    kind: str = "value_error"  # pydantic's error type where it came from pydantic


class InvalidRequest(UsageError):
    """A search request broke a rule; `problems` names each field, `str()` is one line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))

    @classmethod
    def from_validation(cls, exc: ValidationError) -> InvalidRequest:
        return cls([Problem(field_name(e["loc"]), explain(e), e["type"]) for e in exc.errors()])


_PLAIN = {
    "greater_than_equal": "must be at least {ge}, got {input!r}",
    "less_than_equal": "must be at most {le}, got {input!r}",
    "int_parsing": "must be a whole number, got {input!r}",
    "int_type": "must be a whole number, got {input!r}",
    "string_type": "must be text, got {input!r}",
    "extra_forbidden": "is not a search parameter",
    "missing": "is required",
    "string_too_long": "is too long: at most {max_length} characters",
}


def explain(error: Mapping[str, Any]) -> str:
    """One readable message for a pydantic error, in our own words where we have them."""
    template = _PLAIN.get(error.get("type", ""))
    if template is not None:
        try:
            return template.format(input=error.get("input"), **(error.get("ctx") or {}))
        except (KeyError, IndexError):
            pass
    return readable(error["msg"])


def readable(msg: str) -> str:
    """Pydantic's message without its `Value error, ` prefix."""
    return msg.removeprefix("Value error, ")


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """`("query", "k")` -> `k`; a body-level error (no field) -> `body`."""
    parts = [str(p) for p in loc if p not in ("query", "body")] if len(loc) > 1 else [str(p) for p in loc]
    return ".".join(parts) or "body"


class SearchRequest(BaseModel):
    """Search parameters, the same for `GET /search` (query string), `POST /search` (JSON), the page,
    `retrieval search`, the MCP `search_papers` tool and the LangChain / LlamaIndex retrievers."""

    # The schema's pattern documents what `_query_not_empty` checks (some non-blank character);
    # the validator gives the readable message.
    q: str = Field(description="the query, Korean or English", json_schema_extra={"minLength": 1, "pattern": r"\S"})
    k: int = Field(default=10, ge=1, description="results per page (1 to the server's max_limit, 100 by default)")
    offset: int = Field(default=0, ge=0, description="results to skip, for paging (at most max_offset, 10,000)")
    mode: Mode = Field(default="hybrid", description="dense, lexical or hybrid")
    date_from: str | None = Field(default=None, description="first digest date, YYYY-MM-DD (inclusive)")
    date_to: str | None = Field(default=None, description="last digest date, YYYY-MM-DD (inclusive)")
    min_votes: int | None = Field(default=None, ge=0, description="minimum upvotes")
    author: str | None = Field(default=None, max_length=200, description="case-insensitive author substring")
    explain: bool = Field(
        default=False, description="add each hit's score breakdown (`explain`): legs, matched terms, bullets"
    )
    facets: Literal["months"] | None = Field(
        default=None, description="months: count the papers that match well per month (`facets.months`)"
    )

    @field_validator("date_from", "date_to", "author", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("q")
    @classmethod
    def _query_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the query is empty")
        return value

    @field_validator("date_from", "date_to")
    @classmethod
    def _iso_date(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        value = iso_date(value)
        if info.field_name == "date_to" and (start := info.data.get("date_from")) and start > value:
            raise ValueError(f"date_from ({start}) is after date_to ({value})")
        return value

    def limit_problems(self, limits: RequestLimits) -> list[Problem]:
        """What breaks the operator's bounds (query length, page size, offset)."""
        problems: list[Problem] = []
        if len(self.q) > limits.max_query_chars:
            problems.append(
                Problem("q", f"the query has {len(self.q)} characters; at most {limits.max_query_chars} are allowed")
            )
        if "k" in self.model_fields_set and self.k > limits.max_limit:
            problems.append(Problem("k", f"must be at most {limits.max_limit}, got {self.k}"))
        if self.offset > limits.max_offset:
            problems.append(Problem("offset", f"must be at most {limits.max_offset}, got {self.offset}"))
        return problems

    def checked(self, limits: RequestLimits) -> SearchRequest:
        """This request, or `InvalidRequest` when it breaks `limits`."""
        problems = self.limit_problems(limits)
        if problems:
            raise InvalidRequest(problems)
        if self.k > limits.max_limit:  # the default page size, on a server that allows fewer
            return self.model_copy(update={"k": limits.max_limit})
        return self

    def filters(self) -> Filters:
        return Filters(date_from=self.date_from, date_to=self.date_to, min_votes=self.min_votes, author=self.author)


class SearchBody(SearchRequest):
    """JSON body of `POST /search`; unknown fields are refused so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", strict=True)  # strict: `"k": true` is not the integer 1


def parse_search_request(
    data: Mapping[str, Any], limits: RequestLimits | None = None, *, strict: bool = False
) -> SearchRequest:
    """Validate raw parameters (None values are left out) into a `SearchRequest` within `limits`.

    Raises `InvalidRequest` naming every field that is wrong.
    """
    given = {key: value for key, value in data.items() if value is not None}
    try:
        request = (SearchBody if strict else SearchRequest).model_validate(given)
    except ValidationError as exc:
        raise InvalidRequest.from_validation(exc) from None
    return request.checked(limits or RequestLimits())
