"""Score config handlers: create, update (text in place, definition as a new version), archive, read."""

from __future__ import annotations

import uuid
from typing import Any

from scoring.adapters import repository
from scoring.application.deps import Actor, Deps
from scoring.domain.configs import Definition, apply_update, new_config
from scoring.domain.errors import Conflict, Forbidden, NotFound
from tally_shared.envelope import make_envelope
from tally_shared.events import ScoreConfigArchived, ScoreConfigCreated, ScoreConfigData, ScoreConfigUpdated
from tally_shared.outbox import Outgoing
from tally_shared.topics import SCORE_CONFIGS


def _require_configure(actor: Actor) -> None:
    if not actor.can_configure:
        raise Forbidden("only a project admin or member manages score configs")


def _outgoing(project_id: str, payload: ScoreConfigCreated | ScoreConfigUpdated | ScoreConfigArchived,
              config: ScoreConfigData) -> Outgoing:
    return Outgoing(SCORE_CONFIGS, make_envelope(payload, project=project_id, key=config.id), config.id)


async def create_config(
    deps: Deps, actor: Actor, *, name: str, definition: Definition, description: str | None = None,
    guidelines: str | None = None,
) -> ScoreConfigData:
    _require_configure(actor)
    config = new_config(config_id=str(uuid.uuid4()), name=name, definition=definition, description=description,
                        guidelines=guidelines, now=deps.clock())
    event = _outgoing(actor.project_id, ScoreConfigCreated(config=config), config)
    async with deps.uow() as uow:
        if not await repository.insert_config(uow.session, actor.project_id, config):
            raise Conflict("name_taken", f"a score config named {name!r} already exists in this project")
        uow.emit(event)
        await uow.commit()
    deps.configs.put(actor.project_id, [config])
    await uow.publish()
    return config


async def update_config(deps: Deps, actor: Actor, config_id: str, changes: dict[str, Any]) -> ScoreConfigData:
    """``changes`` holds only the fields the client sent."""
    _require_configure(actor)
    async with deps.uow() as uow:
        s = uow.session
        current = await repository.get_config(s, actor.project_id, config_id, lock=True)
        if current is None:
            raise NotFound("score config", config_id)
        change = apply_update(current, changes, deps.clock())
        if not change.changed:
            return current
        cfg = change.config
        if cfg.name != current.name and await repository.name_taken(s, actor.project_id, cfg.name, cfg.id):
            raise Conflict("name_taken", f"a score config named {cfg.name!r} already exists in this project")
        await repository.save_config(s, actor.project_id, cfg, new_version=change.new_version)
        payload: ScoreConfigUpdated | ScoreConfigArchived = (
            ScoreConfigArchived(config=cfg) if change.archived_changed and cfg.is_archived
            else ScoreConfigUpdated(config=cfg)
        )
        event = _outgoing(actor.project_id, payload, cfg)
        uow.emit(event)
        await uow.commit()
    deps.configs.put(actor.project_id, [cfg])
    await uow.publish()
    return cfg


async def get_config(deps: Deps, actor: Actor, config_id: str) -> ScoreConfigData:
    async with deps.sessions() as s:
        config = await repository.get_config(s, actor.project_id, config_id)
    if config is None:
        raise NotFound("score config", config_id)
    return config


async def list_configs(deps: Deps, actor: Actor, *, page: int, limit: int,
                       include_archived: bool = True) -> tuple[list[ScoreConfigData], int]:
    async with deps.sessions() as s:
        return await repository.list_configs(s, actor.project_id, page=page, limit=limit,
                                             include_archived=include_archived)


async def config_versions(deps: Deps, actor: Actor, config_id: str) -> list[ScoreConfigData]:
    async with deps.sessions() as s:
        versions = await repository.config_versions(s, actor.project_id, config_id)
    if not versions:
        raise NotFound("score config", config_id)
    return versions
