"""Base class for typed event payloads (pydantic v2), one model per Avro contract."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class EventModel(BaseModel):
    """A payload model; its class name is the event type unless ``event_type`` is set."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_type: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("event_type"):
            cls.event_type = cls.__name__

    def to_avro(self) -> dict[str, Any]:
        return self.model_dump(mode="python")
