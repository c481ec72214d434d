"""In-memory stand-ins for the console's two ports (the services' APIs and the identity store), with just enough
behaviour (leases, overlap, per-reviewer status, score versions) for the pages to be exercised for real.

What the fake stores and answers is built from the services' contract models (``tally_shared.contracts``), and
what the pages send is checked against the request models the services validate with: a shape that drifts from
a service fails here, in the console's tests."""

from __future__ import annotations

import base64
import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from console.adapters.api import plain
from console.adapters.identity import Member
from console.adapters.port import ApiCallError, Page, TraceQuery
from tally_shared.contracts import dead_letters as dl_contract
from tally_shared.contracts import queues as qr
from tally_shared.contracts import scoring as sc
from tally_shared.identity.store import User

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


@dataclass
class FakeIdentity:
    users: dict[str, tuple[User, str]] = field(default_factory=dict)  # id -> (user, password)
    projects: dict[str, str] = field(default_factory=dict)
    roles: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, email: str, password: str, project: str, role: str, name: str | None = None) -> User:
        user = User(f"u-{uuid.uuid4().hex[:8]}", email, name)
        self.users[user.id] = (user, password)
        self.projects.setdefault(project, project.title())
        self.roles[(user.id, project)] = role
        return user

    async def authenticate_user(self, email: str, password: str) -> User | None:
        for user, pw in self.users.values():
            if user.email == email.lower() and pw == password:
                return user
        return None

    async def get_user(self, user_id: str) -> User | None:
        hit = self.users.get(user_id)
        return hit[0] if hit else None

    async def user_by_email(self, email: str) -> User | None:
        return next((u for u, _ in self.users.values() if u.email == email.lower()), None)

    async def projects_of(self, user_id: str) -> list[tuple[str, str, str]]:
        return sorted((p, self.projects[p], r) for (u, p), r in self.roles.items() if u == user_id)

    async def role_of(self, user_id: str, project_id: str) -> str | None:
        return self.roles.get((user_id, project_id))

    async def members_of(self, project_id: str) -> list[Member]:
        return [Member(u, self.users[u][0].email, self.users[u][0].name, r)
                for (u, p), r in self.roles.items() if p == project_id]

    async def create_user(self, email: str, password: str, name: str | None = None) -> User:
        existing = await self.user_by_email(email)
        if existing:
            return existing
        user = User(f"u-{uuid.uuid4().hex[:8]}", email.lower(), name)
        self.users[user.id] = (user, password)
        return user

    async def add_member(self, user_id: str, project_id: str, role: str) -> None:
        self.roles[(user_id, project_id)] = role


@dataclass
class World:
    """One project's data, shared by every user's view of it."""

    traces: dict[str, dict[str, Any]] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    decisions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    analytics: dict[str, Any] = field(default_factory=dict)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    comparison: dict[str, Any] = field(default_factory=dict)
    agreement_data: dict[str, Any] = field(default_factory=dict)
    calibration_data: dict[str, Any] = field(default_factory=dict)
    project_id: str = "p"
    dead_letters: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset_items: dict[str, dict[str, Any]] = field(default_factory=dict)
    comments: list[dict[str, Any]] = field(default_factory=list)

    # helpers for tests -------------------------------------------------------------------------------------
    def add_trace(self, trace_id: str | None = None, **fields: Any) -> dict[str, Any]:
        tid = trace_id or new_id("t")
        trace = {"id": tid, "name": "chat", "timestamp": datetime.now(UTC).isoformat(), "input": "hi",
                 "output": "hello", "metadata": {}, "tags": [], "observations": [], "scores": []} | fields
        self.traces[tid] = trace
        return trace

    def add_config(self, name: str, data_type: str, **fields: Any) -> dict[str, Any]:
        cid = new_id("cfg")
        now = datetime.now(UTC)
        cfg = plain(sc.ScoreConfigPublic.model_validate(
            {"id": cid, "name": name, "data_type": data_type, "project_id": self.project_id, "created_at": now,
             "updated_at": now} | fields))
        self.configs[cid] = cfg
        return cfg

    def add_queue(self, name: str, configs: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        return self.store_queue(qr.QueueCreate(name=name, score_configs=[
            qr.ScoreConfigRef(id=c["id"]) for c in configs]).model_dump() | fields)

    def store_queue(self, fields: dict[str, Any], queue_id: str | None = None) -> dict[str, Any]:
        """A queue as queue-router answers it (``QueuePublic``), in the pages' shape (``config_id`` refs)."""
        now = datetime.now(UTC)
        public = qr.QueuePublic.model_validate(
            {"id": queue_id or new_id("q"), "project_id": self.project_id, "description": None, "reviewers": [],
             "reviewers_per_item": 1, "lease_seconds": 600, "blind": False, "is_archived": False,
             "created_by": None, "created_at": now, "updated_at": now} | fields)
        q = plain(public) | {"score_configs": [{"config_id": r.id, "required": r.required}
                                               for r in public.score_configs]}
        self.queues[public.id] = q
        return q

    def add_dead_letter(self, original: Any = None, **fields: Any) -> dict[str, Any]:
        """``original``: bytes (shown as text, or base64 if not UTF-8) or a JSON value."""
        did = str(uuid.uuid4())
        if isinstance(original, bytes):
            try:
                view: dict[str, Any] = {"encoding": "text", "text": original.decode()}
            except UnicodeDecodeError:
                view = {"encoding": "base64", "base64": base64.b64encode(original).decode()}
        else:
            view = {"encoding": "json", "json": original}
        text = view.get("text") or view.get("base64") or str(original)
        dl = plain(dl_contract.DeadLetterDetail.model_validate(
            {"id": did, "project_id": self.project_id, "consumer": "scoring", "topic": "tally.score-commands",
             "partition": 0, "offset": next(_ids), "event_id": str(uuid.uuid4()), "event_type": "RecordScore",
             "key": "t-1", "reason_code": "rule:maximum",
             "reason": "invalid RecordScore: value: above the maximum (maximum)", "failed_at": datetime.now(UTC),
             "status": "open", "status_at": None, "status_by": None, "replay_count": 0,
             "original_size": len(text), "original_truncated": False, "original": view, "related": []} | fields))
        dl["preview"] = text[:500]
        self.dead_letters[did] = dl
        return dl

    def add_item(self, queue_id: str, trace_id: str) -> dict[str, Any]:
        iid = new_id("item")
        item = {"item_id": iid, "queue_id": queue_id, "object_type": "TRACE", "object_id": trace_id,
                "trace_id": trace_id, "status": "pending", "reviews": {}, "created": next(_ids)}
        self.items[iid] = item
        return item


class FakeApi:
    def __init__(self, world: World, user_id: str) -> None:
        self.w = world
        self.user_id = user_id

    # projections ---------------------------------------------------------------------------------------------
    async def list_traces(self, query: TraceQuery) -> Page:
        self.w.calls.append(("list_traces", query))
        rows = [t for t in self.w.traces.values()
                if (not query.name or t.get("name") == query.name)
                and (not query.session_id or t.get("session_id") == query.session_id)
                and all(tag in (t.get("tags") or []) for tag in query.tags)
                and (not query.level or any(o.get("level") == query.level for o in t.get("observations") or []))]
        # a session's traces read oldest first, as the real adapter asks projections for
        rows.sort(key=lambda t: t.get("timestamp") or "", reverse=not query.session_id)
        start = (query.page - 1) * query.limit
        return Page([self._with_scores(t) for t in rows[start:start + query.limit]], len(rows), query.page,
                    query.limit)

    async def list_sessions(self, page: int, limit: int) -> Page:
        self.w.calls.append(("list_sessions", (page, limit)))
        by_session: dict[str, list[dict[str, Any]]] = {}
        for t in self.w.traces.values():
            if t.get("session_id"):
                by_session.setdefault(t["session_id"], []).append(t)
        rows = [{"id": sid, "trace_count": len(ts), "first_at": min(t.get("timestamp") or "" for t in ts),
                 "last_at": max(t.get("timestamp") or "" for t in ts),
                 "user_count": len({t.get("user_id") for t in ts if t.get("user_id")})}
                for sid, ts in by_session.items()]
        rows.sort(key=lambda r: (r["last_at"], r["id"]), reverse=True)
        start = (page - 1) * limit
        return Page(rows[start:start + limit], len(rows), page, limit)

    def _with_scores(self, t: dict[str, Any]) -> dict[str, Any]:
        return t | {"scores": [s for s in self.w.scores.values() if s.get("trace_id") == t["id"]]
                    + list(t.get("scores") or [])}

    async def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        t = self.w.traces.get(trace_id)
        return self._with_scores(t) if t else None

    async def queue_progress(self, queue_id: str) -> dict[str, Any]:
        items = [i for i in self.w.items.values() if i["queue_id"] == queue_id]
        done = sum(1 for i in items if i["status"] == "completed")
        reviewers: dict[str, dict[str, Any]] = {}
        for i in items:
            for r, st in i["reviews"].items():
                d = reviewers.setdefault(r, {"reviewer": r, "completed": 0, "skipped": 0, "flagged": 0,
                                             "in_progress": 0})
                if st in d:
                    d[st] += 1
        return {"total": len(items), "completed": done, "pending": len(items) - done, "in_progress": 0,
                "reviewers": list(reviewers.values())}

    async def score_analytics(self, params: dict[str, Any]) -> dict[str, Any]:
        self.w.calls.append(("score_analytics", params))
        return self.w.analytics

    async def list_experiments(self) -> list[dict[str, Any]]:
        return self.w.experiments

    async def compare_experiment(self, params: dict[str, Any]) -> dict[str, Any]:
        self.w.calls.append(("compare_experiment", params))
        return self.w.comparison

    async def agreement(self, queue_id: str, config_id: str | None) -> dict[str, Any]:
        self.w.calls.append(("agreement", (queue_id, config_id)))
        return self.w.agreement_data

    async def calibration(self, config_id: str, score_name: str, params: dict[str, Any]) -> dict[str, Any]:
        self.w.calls.append(("calibration", (config_id, score_name)))
        return self.w.calibration_data

    async def list_dead_letters(self, params: dict[str, Any]) -> dict[str, Any]:
        self.w.calls.append(("list_dead_letters", params))
        status = params.get("status", "open")
        rows = [d for d in self.w.dead_letters.values()
                if (status == "all" or d["status"] == status)
                and all(d.get(k) == params[k] for k in ("consumer", "topic", "reason_code") if params.get(k))]
        rows.sort(key=lambda d: d["failed_at"], reverse=True)
        by_reason: dict[str, int] = {}
        for d in rows:
            by_reason[d["reason_code"]] = by_reason.get(d["reason_code"], 0) + 1
        by_status: dict[str, int] = {}
        for d in self.w.dead_letters.values():
            by_status[d["status"]] = by_status.get(d["status"], 0) + 1
        page, limit = int(params.get("page", 1)), int(params.get("limit", 50))
        data = [{k: v for k, v in d.items() if k not in ("original", "related")}
                for d in rows[(page - 1) * limit: page * limit]]
        return {"data": data, "meta": {"page": page, "limit": limit, "total": len(rows)},
                "counts": {"by_reason": by_reason, "by_status": by_status}}

    async def get_dead_letter(self, dead_letter_id: str) -> dict[str, Any] | None:
        return self.w.dead_letters.get(dead_letter_id)

    def _chosen(self, ids: list[str] | None, reason_code: str | None) -> list[dict[str, Any]]:
        if ids is not None:
            missing = [i for i in ids if i not in self.w.dead_letters]
            if missing:
                raise ApiCallError(404, "not_found", f"dead letter {missing[0]} not found in this project")
            return [self.w.dead_letters[i] for i in ids]
        return [d for d in self.w.dead_letters.values()
                if d["status"] == "open" and (not reason_code or d["reason_code"] == reason_code)]

    async def replay_dead_letters(self, ids: list[str] | None = None,
                                  reason_code: str | None = None) -> dict[str, Any]:
        self.w.calls.append(("replay_dead_letters", (ids, reason_code)))
        chosen = self._chosen(ids, reason_code)
        for d in chosen:
            d.update(status="replayed", replay_count=d["replay_count"] + 1, status_by=self.user_id,
                     status_at=datetime.now(UTC).isoformat())
        return plain(dl_contract.ReplayResult(replayed=len(chosen), messages=len(chosen), skipped=[], more=False))

    async def discard_dead_letters(self, ids: list[str] | None = None,
                                   reason_code: str | None = None) -> dict[str, Any]:
        self.w.calls.append(("discard_dead_letters", (ids, reason_code)))
        chosen = [d for d in self._chosen(ids, reason_code) if d["status"] != "discarded"]
        for d in chosen:
            d.update(status="discarded", status_by=self.user_id, status_at=datetime.now(UTC).isoformat())
        return plain(dl_contract.DiscardResult(discarded=len(chosen), more=False))

    # scoring -------------------------------------------------------------------------------------------------
    async def list_configs(self, include_archived: bool = False) -> list[dict[str, Any]]:
        return [c for c in self.w.configs.values() if include_archived or not c.get("is_archived")]

    async def get_config(self, config_id: str) -> dict[str, Any] | None:
        return self.w.configs.get(config_id)

    async def create_config(self, data: dict[str, Any]) -> dict[str, Any]:
        sc.ScoreConfigCreate.model_validate(data)  # what scoring takes
        if any(c["name"] == data["name"] for c in self.w.configs.values()):
            raise ApiCallError(409, "conflict", f"a score config named {data['name']!r} exists")
        return self.w.add_config(**data)

    async def update_config(self, config_id: str, data: dict[str, Any]) -> dict[str, Any]:
        sc.ScoreConfigUpdate.model_validate(data)
        cfg = self.w.configs[config_id]
        cfg.update(data)
        cfg["version"] += 1
        return cfg

    async def set_config_archived(self, config_id: str, archived: bool) -> dict[str, Any]:
        self.w.configs[config_id]["is_archived"] = archived
        return self.w.configs[config_id]

    async def create_scores(self, items: list[dict[str, Any]]) -> list[ApiCallError | None]:
        out: list[ApiCallError | None] = []
        for data in items:
            try:
                await self.create_score(data)
                out.append(None)
            except ApiCallError as e:
                out.append(e)
        return out

    async def create_score(self, data: dict[str, Any]) -> dict[str, Any]:
        self.w.calls.append(("create_score", data))
        sc.ScoreCreate.model_validate(data)
        sid = new_id("s")
        cfg = self.w.configs.get(data.get("config_id", ""))
        score = dict(data) | {"id": sid, "author_user_id": self.user_id,
                              "data_type": data.get("data_type") or (cfg or {}).get("data_type")}
        if isinstance(data.get("value"), str):
            score["string_value"] = data["value"]
        self.w.scores[sid] = score
        return score

    async def update_score(self, score_id: str, data: dict[str, Any]) -> dict[str, Any]:
        self.w.calls.append(("update_score", (score_id, data)))
        sc.ScoreUpdate.model_validate(data)
        score = self.w.scores[score_id]
        if score["author_user_id"] != self.user_id:
            raise ApiCallError(403, "forbidden", "not your score")
        score.update(data)
        if isinstance(data.get("value"), str):
            score["string_value"] = data["value"]
        return score

    async def delete_score(self, score_id: str) -> None:
        self.w.scores.pop(score_id, None)

    async def list_scores(self, params: dict[str, str]) -> list[dict[str, Any]]:
        return [s for s in self.w.scores.values()
                if all(str(s.get(k)) == v for k, v in params.items())]

    # queue-router --------------------------------------------------------------------------------------------
    async def list_queues(self) -> list[dict[str, Any]]:
        return list(self.w.queues.values())

    async def get_queue(self, queue_id: str) -> dict[str, Any] | None:
        return self.w.queues.get(queue_id)

    async def create_queue(self, data: dict[str, Any]) -> dict[str, Any]:
        self.w.calls.append(("create_queue", data))
        return self.w.store_queue(qr.QueueCreate.model_validate(_queue_out(data)).model_dump())

    async def update_queue(self, queue_id: str, data: dict[str, Any]) -> dict[str, Any]:
        body = _queue_out(data)
        archive = body.pop("is_archived", None)
        change = qr.QueueUpdate.model_validate(body).model_dump(exclude_unset=True)
        q = self.w.queues[queue_id]
        current = {k: v for k, v in q.items() if k != "score_configs"} | {
            "score_configs": [{"id": r["config_id"], "required": r["required"]} for r in q["score_configs"]]}
        return self.w.store_queue(current | change | ({"is_archived": True} if archive else {}), queue_id)

    async def list_rules(self, queue_id: str) -> list[dict[str, Any]]:
        return list(self.w.rules.get(queue_id, []))

    async def create_rule(self, queue_id: str, data: dict[str, Any]) -> dict[str, Any]:
        self.w.calls.append(("create_rule", data))
        qr.RuleCreate.model_validate(_rule_out(data))  # what queue-router takes, its filter checks included
        rule = {"id": new_id("r"), "queue_id": queue_id, **data}
        self.w.rules.setdefault(queue_id, []).append(rule)
        return rule

    async def update_rule(self, queue_id: str, rule_id: str, data: dict[str, Any]) -> dict[str, Any]:
        rule = next(r for r in self.w.rules[queue_id] if r["id"] == rule_id)
        rule.update(data)
        return rule

    async def preview_rule(self, queue_id: str, data: dict[str, Any]) -> dict[str, Any]:
        self.w.calls.append(("preview_rule", data))
        asked = qr.RulePreview.model_validate(_rule_out(data))
        # Every trace of the world matches (the fake does not run filters); sampling applies as queue-router's.
        matched = len(self.w.traces)
        return plain(qr.RulePreviewResult(matched=matched, objects=matched, count=round(matched * asked.sample_rate),
                                          scanned=matched, days=asked.days, truncated=False))

    async def add_items(self, queue_id: str, trace_ids: list[str]) -> dict[str, Any]:
        present = {i["object_id"] for i in self.w.items.values() if i["queue_id"] == queue_id}
        added = [t for t in trace_ids if t not in present]
        for t in added:
            self.w.add_item(queue_id, t)
        return {"added": len(added)}

    def _slots_left(self, item: dict[str, Any]) -> bool:
        q = self.w.queues[item["queue_id"]]
        done = sum(1 for st in item["reviews"].values() if st == "completed")
        return item["status"] != "completed" and done < (q.get("reviewers_per_item") or 1)

    async def next_item(self, queue_id: str) -> dict[str, Any] | None:
        now = datetime.now(UTC)
        for item in sorted(self.w.items.values(), key=lambda i: i["created"]):
            if item["queue_id"] != queue_id or not self._slots_left(item):
                continue
            mine = item["reviews"].get(self.user_id)
            lease = item.get("leases", {}).get(self.user_id)
            if mine in ("completed", "skipped", "flagged"):
                continue
            if mine == "in_progress" and lease and lease["expires_at"] > now:
                return self._lease_view(item, lease)
            lease = {"lease_id": uuid.uuid4().hex, "expires_at": now + timedelta(seconds=600)}
            item.setdefault("leases", {})[self.user_id] = lease
            item["reviews"][self.user_id] = "in_progress"
            return self._lease_view(item, lease)
        return None

    def _lease_view(self, item: dict[str, Any], lease: dict[str, Any]) -> dict[str, Any]:
        return {"queue_id": item["queue_id"], "item_id": item["item_id"], "lease_id": lease["lease_id"],
                "expires_at": lease["expires_at"].isoformat(), "object_type": item["object_type"],
                "object_id": item["object_id"], "trace_id": item["trace_id"]}

    async def get_item(self, queue_id: str, item_id: str) -> dict[str, Any] | None:
        item = self.w.items.get(item_id)
        if item is None or item["queue_id"] != queue_id:
            return None
        return {k: v for k, v in item.items() if k not in ("reviews", "leases")} | {
            "my_status": item["reviews"].get(self.user_id, "pending")}

    def _held(self, item_id: str, lease_id: str | None) -> dict[str, Any]:
        item = self.w.items[item_id]
        lease = item.get("leases", {}).get(self.user_id)
        if not lease or (lease_id and lease["lease_id"] != lease_id):
            raise ApiCallError(409, "lease_lost", "you hold no lease on this item")
        return item

    async def heartbeat(self, queue_id: str, item_id: str, lease_id: str) -> dict[str, Any]:
        item = self._held(item_id, lease_id)
        lease = item["leases"][self.user_id]
        lease["expires_at"] = datetime.now(UTC) + timedelta(seconds=600)
        return {"item_id": item_id, "lease_id": lease_id, "expires_at": lease["expires_at"].isoformat()}

    async def complete_item(self, queue_id: str, item_id: str, lease_id: str | None,
                            take_next: bool = False) -> dict[str, Any]:
        self.w.calls.append(("complete_item", (queue_id, item_id, lease_id)))
        item = self._held(item_id, lease_id)
        item["reviews"][self.user_id] = "completed"
        item["leases"].pop(self.user_id)
        if not self._slots_left(item):
            item["status"] = "completed"
        return {"next_lease": await self.next_item(queue_id)} if take_next else {}

    async def _give_back(self, item_id: str, lease_id: str | None, status: str, reason: str | None) -> None:
        item = self._held(item_id, lease_id)
        item["reviews"][self.user_id] = status
        item.setdefault("reasons", {})[self.user_id] = reason
        item["leases"].pop(self.user_id)

    async def skip_item(self, queue_id: str, item_id: str, lease_id: str | None, reason: str | None,
                        take_next: bool = False) -> dict[str, Any]:
        self.w.calls.append(("skip_item", (queue_id, item_id, reason)))
        await self._give_back(item_id, lease_id, "skipped", reason)
        return {"next_lease": await self.next_item(queue_id)} if take_next else {}

    async def flag_item(self, queue_id: str, item_id: str, lease_id: str | None, reason: str | None) -> None:
        self.w.calls.append(("flag_item", (queue_id, item_id, reason)))
        await self._give_back(item_id, lease_id, "flagged", reason)

    async def release_item(self, queue_id: str, item_id: str, lease_id: str) -> None:
        item = self._held(item_id, lease_id)
        item["reviews"].pop(self.user_id, None)
        item["leases"].pop(self.user_id)

    async def my_items(self, queue_id: str, status: str | None = None) -> list[dict[str, Any]]:
        out = []
        for item in sorted(self.w.items.values(), key=lambda i: i["created"]):
            st = item["reviews"].get(self.user_id)
            if item["queue_id"] == queue_id and st in ("completed", "skipped", "flagged") and (not status or
                                                                                              st == status):
                out.append({"item_id": item["item_id"], "queue_id": queue_id, "object_type": item["object_type"],
                            "object_id": item["object_id"], "trace_id": item["trace_id"], "my_status": st,
                            "my_reason": item.get("reasons", {}).get(self.user_id)})
        return out

    # scoring: datasets and comments ------------------------------------------------------------------------
    async def create_dataset(self, name: str) -> dict[str, Any]:
        self.w.calls.append(("create_dataset", name))
        return self.w.datasets.setdefault(name, {"id": new_id("ds"), "name": name})

    async def upsert_dataset_item(self, data: dict[str, Any]) -> dict[str, Any]:
        self.w.calls.append(("upsert_dataset_item", data))
        ds = self.w.datasets.get(data["datasetName"])
        if ds is None:
            raise ApiCallError(404, "not_found", f"dataset {data['datasetName']!r} not found")
        item_id = data.get("id") or new_id("dsi")
        item = self.w.dataset_items.get(item_id, {"id": item_id, "status": "ACTIVE", "datasetId": ds["id"]})
        item.update({k: v for k, v in data.items() if v is not None})
        self.w.dataset_items[item_id] = item
        return item

    async def list_comments(self, object_type: str, object_id: str) -> list[dict[str, Any]]:
        return [c for c in self.w.comments if (c["objectType"], c["objectId"]) == (object_type, object_id)]

    async def create_comment(self, object_type: str, object_id: str, content: str) -> dict[str, Any]:
        comment = {"id": new_id("c"), "objectType": object_type, "objectId": object_id, "content": content,
                   "authorUserId": self.user_id, "createdAt": datetime.now(UTC).isoformat()}
        self.w.comments.append(comment)
        return {"id": comment["id"]}

    async def undo_skip(self, queue_id: str, item_id: str) -> dict[str, Any] | None:
        item = self.w.items[item_id]
        if item["reviews"].get(self.user_id) != "skipped":
            raise ApiCallError(409, "not_skipped", "you have not skipped this item")
        lease = {"lease_id": uuid.uuid4().hex, "expires_at": datetime.now(UTC) + timedelta(seconds=600)}
        item.setdefault("leases", {})[self.user_id] = lease
        item["reviews"][self.user_id] = "in_progress"
        return self._lease_view(item, lease)

    async def rule_decisions(self, queue_id: str, rule_id: str, *, page: int = 1,
                             outcome: str | None = None) -> dict[str, Any]:
        rows = [d for d in self.w.decisions.get(rule_id, []) if outcome is None or d["outcome"] == outcome]
        return {"data": rows[(page - 1) * 50:page * 50],
                "meta": {"page": page, "limit": 50, "total_items": len(rows),
                         "total_pages": (len(rows) + 49) // 50}}


def _queue_out(data: dict[str, Any]) -> dict[str, Any]:
    # The adapter's request shapes (config refs by ``id``, a rule's groups as a filter).
    from console.adapters.api import _queue_out as queue_out

    return queue_out(data)


def _rule_out(data: dict[str, Any]) -> dict[str, Any]:
    from console.adapters.api import _rule_out as rule_out

    return rule_out(data)


@dataclass
class FakeApiFactory:
    worlds: dict[str, World] = field(default_factory=dict)

    def world(self, project_id: str) -> World:
        return self.worlds.setdefault(project_id, World(project_id=project_id))

    def for_user(self, user_id: str, project_id: str) -> FakeApi:
        return FakeApi(self.world(project_id), user_id)
