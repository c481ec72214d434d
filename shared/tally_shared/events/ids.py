"""Bounds every event shares: ids of traces, observations, scores, queues and people."""

from typing import Annotated

from pydantic import Field

MAX_ID_LENGTH = 200

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
