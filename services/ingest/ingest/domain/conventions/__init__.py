"""The attribute conventions an OTLP span is read with, one mapper each, applied in this order:

1. Langfuse (``langfuse.*``): what the Langfuse SDKs set;
2. OpenInference (``openinference.span.kind``, ``input.value``/``output.value``, ``llm.*``, ``metadata``,
   ``tag.tags``);
3. OpenTelemetry GenAI (``gen_ai.*``, its span events);
4. shared: the identity attributes several conventions use (``user.id``, ``enduser.id``, ``session.id``,
   ``gen_ai.conversation.id``) and other instrumentations' plain forms (Traceloop, MLflow, ``input``/``output``/
   ``model``).

The order is the precedence: the first mapper to set a field wins (``draft`` says how), so a span carrying both
``llm.model_name`` and ``gen_ai.request.model`` gets its model from OpenInference. A convention's own forms keep
their own order (GenAI's response model before its request model; its messages attributes before its flattened
``gen_ai.prompt.N.*``). The type a span gets when no convention names one, and what the span itself says (status,
timestamps, parent) and its resource, are ``ingest.domain.otel``'s.
"""

from __future__ import annotations

from collections.abc import Callable

from ingest.domain.conventions.draft import Draft
from ingest.domain.conventions.genai import map_genai
from ingest.domain.conventions.langfuse import map_langfuse
from ingest.domain.conventions.openinference import map_openinference
from ingest.domain.conventions.shared import map_shared

MAPPERS: tuple[Callable[[Draft], None], ...] = (map_langfuse, map_openinference, map_genai, map_shared)

__all__ = ["MAPPERS", "Draft"]
