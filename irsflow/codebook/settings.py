"""The request's ``codebook`` block: whether and how reviewed rules are injected into prompts."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from irsflow.paths import WritableSQLite


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class CodebookConfig(_Strict):
    """Rules from reviewed corrections added to matching prompts (irsflow/codebook/store.py)."""

    enabled: bool = Field(False, description="Inject matching codebook rules into generation prompts.")
    path: Annotated[str, WritableSQLite("rule_versions")] | None = Field(
        None,
        min_length=1,
        description="SQLite file; default <data dir>/codebook.sqlite; elsewhere only inside "
        "the writable roots (the data dir, $IRSFLOW_WRITABLE_ROOTS)",
    )
    version: int | None = Field(
        None, ge=0, le=2**31 - 1, description="Pin this codebook version (reproduce a job); latest if unset."
    )
    top_k: int = Field(3, ge=1, le=1000, description="Most rules injected per question.")
    threshold: float = Field(0.5, ge=0, le=1000, description="Minimum rule score (cosine + keyword bonus) to inject.")
