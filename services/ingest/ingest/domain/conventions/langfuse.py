"""Langfuse's own attributes, as the langfuse 5.x SDK sets them (``langfuse/_client/attributes.py``), and older
SDKs' ``langfuse.prompt.*``: observation type, input, output, level, status, model, parameters, usage, cost,
metadata, prompt; trace name, tags, metadata, public, input, output; environment, release, version; experiment
links. (``user.id`` and ``session.id``, which OpenInference uses too, are ``shared``'s.)"""

from __future__ import annotations

from typing import Any

from ingest.domain import fields as f
from ingest.domain.conventions.draft import Draft, json_or_str, maybe_json

_OBSERVATION_METADATA = "langfuse.observation.metadata"
_TRACE_METADATA = "langfuse.trace.metadata"
_EXPERIMENT = (("langfuse.experiment.name", "dataset_run_name"), ("langfuse.experiment.item.id", "dataset_item_id"),
               ("langfuse.experiment.dataset.id", "dataset_id"))


def map_langfuse(d: Draft) -> None:
    if d.lf:
        _observation(d, d.attrs)
        _trace(d, d.attrs)


def _observation(d: Draft, lf: dict[str, Any]) -> None:
    if "langfuse.observation.type" in lf:
        d.type = d.conv(lf, "langfuse.observation.type", f.opt_observation_type)
    if "langfuse.observation.input" in lf:
        d.input = maybe_json(lf.pop("langfuse.observation.input"))
    if "langfuse.observation.output" in lf:
        d.output = maybe_json(lf.pop("langfuse.observation.output"))
    if "langfuse.observation.model.name" in lf:
        d.model = d.conv(lf, "langfuse.observation.model.name", f.opt_str)
    if "langfuse.observation.model.parameters" in lf:
        d.params = d.conv(lf, "langfuse.observation.model.parameters", f.opt_object, decode=True)
    if "langfuse.observation.usage_details" in lf:
        d.usage = d.conv(lf, "langfuse.observation.usage_details", f.opt_numbers, decode=True)
    if "langfuse.observation.cost_details" in lf:
        d.cost = d.conv(lf, "langfuse.observation.cost_details", f.opt_numbers, decode=True) or None
    if "langfuse.observation.completion_start_time" in lf:
        d.completion_start_time = d.conv(lf, "langfuse.observation.completion_start_time", f.opt_time, decode=True)
    if "langfuse.observation.level" in lf:
        d.level = d.conv(lf, "langfuse.observation.level", f.opt_level)
    if "langfuse.observation.status_message" in lf:
        d.status_message = d.conv(lf, "langfuse.observation.status_message", f.opt_text)
    if "langfuse.environment" in lf:
        d.environment = d.conv(lf, "langfuse.environment", f.opt_str)
    if "langfuse.release" in lf:
        d.release = d.conv(lf, "langfuse.release", f.opt_str)
    if "langfuse.version" in lf:
        d.version = d.conv(lf, "langfuse.version", f.opt_str)
    has = d.prefixes
    if "langfuse.observation.metadata" in has or "langfuse.trace.metadata" in has \
            or "langfuse.internal." in has:
        _metadata(d, lf)
    # The prompt a generation was made from (``langfuse.prompt.*``: older SDKs; the newer form wins).
    if "langfuse.prompt." in has or "langfuse.observation.prompt." in has:
        _prompt(d, lf)


def _metadata(d: Draft, lf: dict[str, Any]) -> None:
    d.trace_metadata = {}
    d.internal = {}
    for k in list(lf):
        if k.startswith(_OBSERVATION_METADATA):
            _metadata_attr(d.metadata, k, lf.pop(k), _OBSERVATION_METADATA)
        elif k.startswith(_TRACE_METADATA):
            _metadata_attr(d.trace_metadata, k, lf.pop(k), _TRACE_METADATA)
        elif k.startswith("langfuse.internal."):
            d.internal[k] = lf.pop(k)


def _prompt(d: Draft, lf: dict[str, Any]) -> None:
    d.prompt = {}
    for scope in ("langfuse.prompt.", "langfuse.observation.prompt."):
        if scope + "name" in lf:
            name = d.conv(lf, scope + "name", f.opt_str)
            if name is not None:
                d.prompt["prompt_name"] = name
        if scope + "version" in lf:
            version = d.conv(lf, scope + "version", f.opt_prompt_version, decode=True)
            if version is not None:
                d.prompt["prompt_version"] = version


def _trace(d: Draft, lf: dict[str, Any]) -> None:
    if "langfuse.trace.name" in lf:
        d.trace_name = d.conv(lf, "langfuse.trace.name", f.opt_str)
    if "langfuse.trace.input" in lf:
        d.trace_input = maybe_json(lf.pop("langfuse.trace.input"))
    if "langfuse.trace.output" in lf:
        d.trace_output = maybe_json(lf.pop("langfuse.trace.output"))
    for key, target in (("langfuse.user.id", "user_id"), ("langfuse.session.id", "session_id")):
        if key in lf:
            v = d.conv(lf, key, f.opt_str)
            if v is not None:
                if not d.trace_identity:
                    d.trace_identity = {}
                d.trace_identity.setdefault(target, v)
    if "langfuse.trace.public" in lf:
        d.public = d.conv(lf, "langfuse.trace.public", f.opt_bool, decode=True)
    for key, target in _EXPERIMENT:
        if key in lf:
            v = d.conv(lf, key, f.opt_str)
            if v is not None:
                if not d.experiment:
                    d.experiment = {}
                d.experiment[target] = v
    if "langfuse.trace.tags" in lf:
        d.tags = lf.pop("langfuse.trace.tags")


def _metadata_attr(into: dict[str, Any], key: str, value: Any, prefix: str) -> None:
    if key == prefix:
        decoded = json_or_str(value)
        into.update(decoded if isinstance(decoded, dict) else {"metadata": decoded})
    elif key[len(prefix)] == ".":
        into[key[len(prefix) + 1:]] = json_or_str(value)
    else:
        into.setdefault("attributes", {})[key] = value
