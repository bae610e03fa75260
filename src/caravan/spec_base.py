"""The frozen pydantic base every spec model shares (no I/O)."""

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """Immutable, and unknown fields are errors (a typo in a spec is reported, not ignored)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
