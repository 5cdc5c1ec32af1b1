"""One settings object, read from the environment (prefix `RETRIEVAL_`) and CLI flags.

Created in `main` or the app factory and passed down; never a module-level global.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from retrieval.embedding import DEFAULT_MODEL
from retrieval.refit import REFIT_PERCENT

if TYPE_CHECKING:
    from retrieval.learned import LearnOptions
    from retrieval.requests import RequestLimits

DEFAULT_INDEX = Path("index/default")


class Settings(BaseSettings):
    """Service and build settings. Every field can be set as `RETRIEVAL_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="RETRIEVAL_", extra="ignore")

    index_dir: Path = Field(default=DEFAULT_INDEX, description="index directory to build or serve")
    model: str = Field(default=DEFAULT_MODEL, description="model spec used to build an index")
    batch_size: int = Field(default=256, ge=1, le=4096, description="texts per embedding call")
    tuning_queries: Path | Literal["none"] | None = Field(
        default=None,
        description="JSON-lines queries {q, ids, lang} the build fits the learned models on; "
        "unset: the bundled dev set; none: fit nothing",
    )
    learned_title_sample: int = Field(default=300, ge=1, description="title-task queries the learned models see")
    learned_title_fold: int = Field(
        default=0, ge=0, le=1, description="the title task's half the learned models train on (the other is held out)"
    )
    learned_refit_percent: float = Field(
        default=REFIT_PERCENT, ge=0, le=100, description="refit the learned models once this share of papers changed"
    )
    learned_rerank: bool = Field(default=True, description="fit the second-stage re-ranker with the learned models")
    learned_rerank_title_sample: int = Field(default=5000, ge=1, description="title-task queries the re-ranker sees")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_token: SecretStr | None = Field(default=None, description="bearer token required by the API when set")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="origins allowed by CORS; empty: none"
    )
    max_query_chars: int = Field(default=1000, ge=1)
    max_limit: int = Field(default=100, ge=1)
    max_offset: int = Field(default=10_000, ge=0)
    max_body_bytes: int = Field(default=16_384, ge=256)
    candidate_depth: int = Field(default=2000, ge=10, le=1_000_000)
    leg_depth: int = Field(default=1000, ge=10, le=1_000_000, description="candidates per paper-level ranking leg")
    rerank: bool = Field(default=True, description="re-order the head of hybrid rankings with the index's re-ranker")
    backend: Literal["embedded", "milvus"] = Field(
        default="embedded", description="where the ranking legs find candidates: in-process FAISS/numpy or Milvus"
    )
    milvus_uri: str | None = Field(
        default=None, description="Milvus: a server URL (http://host:19530) or a Milvus Lite file (*.db)"
    )
    milvus_token: SecretStr | None = Field(default=None, description="Milvus: user:password or an API key")
    milvus_prefix: str = Field(default="dailypapers", description="Milvus: collection name prefix of this index")
    milvus_timeout: float = Field(
        default=10.0, gt=0, le=600, description="Milvus: seconds a search waits (retries included) before a 503"
    )
    watch_corpus: Path | None = Field(
        default=None, description="corpus folder `serve` watches: rebuild and hot-reload the index when digests change"
    )
    watch_force_polling: bool = Field(
        default=False, description="poll the corpus folder instead of native file events (used anyway without them)"
    )
    watch_poll_ms: int = Field(default=300, ge=10, description="polling interval when polling")
    watch_debounce_ms: int = Field(default=1600, ge=1, description="longest time one batch of file events is grouped")
    watch_step_ms: int = Field(default=200, ge=1, description="a batch ends after this long without a new event")

    def request_limits(self) -> RequestLimits:
        """The bounds every front end applies to a search request."""
        from retrieval.requests import RequestLimits

        return RequestLimits(max_query_chars=self.max_query_chars, max_limit=self.max_limit, max_offset=self.max_offset)

    def learn_options(self) -> LearnOptions:
        """What `build-index` fits the learned models on, and when it refits them."""
        from retrieval.learned import LearnOptions

        return LearnOptions(
            tuning_queries=self.tuning_queries,
            title_sample=self.learned_title_sample,
            title_fold=self.learned_title_fold,
            refit_percent=self.learned_refit_percent,
            rerank=self.learned_rerank,
            rerank_title_sample=self.learned_rerank_title_sample,
        )

    @field_validator("api_token", "milvus_token", "milvus_uri", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value

    @field_validator("tuning_queries", mode="before")
    @classmethod
    def _tuning_choice(cls, value: object) -> object:
        if value is None or str(value).strip() == "":
            return None
        return "none" if str(value).strip().lower() == "none" else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value
