"""The console's pages against in-memory fakes of the services' APIs and of the identity store."""

from __future__ import annotations

from console.testing.pages import PASSWORD, Env, csrf_of, sign_in


def test_sign_in_page_shows_the_demo_hint_and_sets_a_safe_cookie(env: Env) -> None:
    c = env.client()
    r = c.get("/login")
    assert r.status_code == 200
    assert "Sign in as lead@t.test / demo" in r.text
    r = c.post("/login", data={"email": "lead@t.test", "password": PASSWORD, "csrf": csrf_of(r.text)})
    assert r.status_code == 303
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


def test_wrong_password_is_refused(env: Env) -> None:
    c = env.client()
    token = csrf_of(c.get("/login").text)
    r = c.post("/login", data={"email": "lead@t.test", "password": "nope", "csrf": token})
    assert r.status_code == 401 and "Wrong email or password" in r.text
    assert c.get("/queues").status_code == 303


def test_pages_need_a_session(env: Env) -> None:
    r = env.client().get("/queues")
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=%2Fqueues")


def test_api_reference_index_links_every_services_openapi_page_without_a_session(env: Env) -> None:
    r = env.client().get("/api/docs")
    assert r.status_code == 200
    for service in ("ingest", "scoring", "queue-router", "projections"):
        assert f'href="/api/docs/{service}"' in r.text and f'href="/api/docs/{service}/openapi.json"' in r.text


def test_post_without_csrf_token_is_rejected(env: Env) -> None:
    c = env.client()
    sign_in(c, "lead@t.test")
    r = c.post("/setup/configs/new", data={"name": "x", "data_type": "BOOLEAN"})
    assert r.status_code == 403
    r = c.post("/setup/configs/new", data={"name": "x", "data_type": "BOOLEAN", "csrf": "forged"})
    assert r.status_code == 403
    assert env.world.configs == {}


def test_login_form_needs_csrf_too(env: Env) -> None:
    r = env.client().post("/login", data={"email": "lead@t.test", "password": PASSWORD})
    assert r.status_code == 403


def test_open_redirect_after_sign_in_is_refused(env: Env) -> None:
    c = env.client()
    token = csrf_of(c.get("/login").text)
    r = c.post("/login", data={"email": "lead@t.test", "password": PASSWORD, "csrf": token,
                               "next": "//evil.example/x"})
    assert r.headers["location"] == "/"


def test_every_page_has_a_nonce_csp(env: Env) -> None:
    c = env.client()
    r = c.get("/login")
    csp = r.headers["content-security-policy"]
    assert "script-src 'nonce-" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    nonce = csp.split("'nonce-")[1].split("'")[0]
    assert f'nonce="{nonce}"' in r.text


def test_create_config_queue_and_rule_through_the_setup_pages(env: Env) -> None:
    c = env.client()
    token = sign_in(c, "lead@t.test")
    r = c.post("/setup/configs/new", data={"csrf": token, "name": "correctness", "data_type": "CATEGORICAL",
                                           "categories": "wrong=0\nright=1", "guidelines": "right: all correct"})
    assert r.status_code == 303, r.text
    [cfg] = env.world.configs.values()
    assert cfg["categories"] == [{"label": "wrong", "value": 0.0}, {"label": "right", "value": 1.0}]
    r = c.post("/setup/queues/new", data={"csrf": token, "name": "Triage", "config": cfg["id"],
                                          "required_config": cfg["id"], "reviewers_per_item": "2",
                                          "lease_minutes": "5", "blind": "on"})
    assert r.status_code == 303, r.text
    [q] = env.world.queues.values()
    assert q["score_configs"] == [{"config_id": cfg["id"], "required": True}]
    assert (q["reviewers_per_item"], q["lease_seconds"], q["blind"]) == (2, 300, True)
    rule_form = {"csrf": token, "rule_name": "errors", "cond-0-group": "1", "cond-0-field": "has_error",
                 "cond-0-op": "eq", "cond-0-value": "true", "cond-1-group": "2", "cond-1-field": "score",
                 "cond-1-op": "lt", "cond-1-value": "0.5", "cond-1-name": "judge", "sample_rate": "50%"}
    env.world.add_trace(name="x", observations=[{"id": "o", "level": "ERROR"}])
    env.world.add_trace(name="y")
    r = c.post(f"/setup/queues/{q['id']}/rules", data=rule_form | {"action": "preview"})
    assert r.status_code == 200
    # queue-router answers the preview (the fake matches every trace; 50% sampling keeps one of two)
    assert "recent trace" in r.text and "2 matched the filter before sampling" in r.text
    name, asked = env.world.calls[-1]
    assert name == "preview_rule" and asked["sample_rate"] == 0.5 and len(asked["groups"]) == 2
    r = c.post(f"/setup/queues/{q['id']}/rules", data=rule_form | {"action": "create"})
    assert r.status_code == 303
    [rule] = env.world.rules[q["id"]]
    assert rule["groups"] == [[{"field": "has_error", "op": "eq", "value": True}],
                              [{"field": "score", "op": "lt", "value": 0.5, "name": "judge"}]]
    assert rule["sample_rate"] == 0.5
    page = c.get(f"/setup/queues/{q['id']}").text
    assert "has an ERROR observation" in page and "score judge &lt; 0.5" in page


def test_bad_rule_names_the_problem(env: Env) -> None:
    c = env.client()
    token = sign_in(c, "lead@t.test")
    q = env.world.add_queue("Q", [])
    r = c.post(f"/setup/queues/{q['id']}/rules", data={"csrf": token, "cond-0-field": "latency",
                                                       "cond-0-op": "gt", "cond-0-value": "slow"})
    assert r.status_code == 422 and "is not a number" in r.text


def test_reviewer_cannot_configure_and_viewer_cannot_review(env: Env) -> None:
    c = env.client()
    token = sign_in(c, "rev@t.test")
    assert c.get("/setup/configs/new").status_code == 403
    assert c.post("/setup/configs/new", data={"csrf": token, "name": "x", "data_type": "TEXT"}).status_code == 403
    v = env.client()
    sign_in(v, "view@t.test")
    q = env.world.add_queue("Q", [])
    assert v.get(f"/queues/{q['id']}/review").status_code == 403


def test_reviewer_sees_only_queues_they_are_named_on(env: Env) -> None:
    rev = next(u for u, _ in env.identity.users.values() if u.email == "rev@t.test")
    env.world.add_queue("Open queue", [])
    env.world.add_queue("Mine", [], reviewers=[rev.email])
    env.world.add_queue("Someone else's", [], reviewers=["other@t.test"])
    c = env.client()
    sign_in(c, "rev@t.test")
    page = c.get("/queues").text
    assert "Open queue" in page and "Mine" in page and "Someone else" not in page


def test_project_switch_only_to_own_projects(env: Env) -> None:
    lead = next(u for u, _ in env.identity.users.values() if u.email == "lead@t.test")
    env.identity.projects["proj-b"] = "Project B"
    env.identity.roles[(lead.id, "proj-b")] = "viewer"
    env.factory.world("proj-b").add_trace(name="only-in-b")
    env.factory.world("proj-c").add_trace(name="only-in-c")
    c = env.client()
    token = sign_in(c, "lead@t.test")
    assert "only-in-b" not in c.get("/traces").text
    c.post("/projects/switch", data={"csrf": token, "project": "proj-b", "next": "/traces"})
    assert "only-in-b" in c.get("/traces").text
    c.post("/projects/switch", data={"csrf": token, "project": "proj-c", "next": "/traces"})
    assert "only-in-c" not in c.get("/traces").text


def test_members_page_adds_a_reviewer(env: Env) -> None:
    c = env.client()
    token = sign_in(c, "lead@t.test")
    r = c.post("/setup/members", data={"csrf": token, "email": "New@T.test", "role": "reviewer",
                                       "password": "long-enough-pw", "name": "New"})
    assert r.status_code == 303
    user = next(u for u, _ in env.identity.users.values() if u.email == "new@t.test")
    assert env.identity.roles[(user.id, env.project)] == "reviewer"
    r2 = env.client()
    sign_in(r2, "rev@t.test")
    assert r2.get("/setup/members").status_code == 403


def test_trusted_proxy_header_signs_in_only_when_enabled(env: Env) -> None:
    from console.config import Settings
    from console.entrypoints.app import create_app

    off = env.client()
    assert off.get("/queues", headers={"X-Auth-Email": "lead@t.test"}).status_code == 303
    app = create_app(Settings(secret_key="k" * 32, trusted_user_header="X-Auth-Email"), api_factory=env.factory,
                     identity=env.identity)
    from fastapi.testclient import TestClient

    on = TestClient(app, base_url="http://console.test", follow_redirects=False)
    assert on.get("/queues", headers={"X-Auth-Email": "lead@t.test"}).status_code == 200
    fresh = TestClient(app, base_url="http://console.test", follow_redirects=False)
    assert fresh.get("/queues", headers={"X-Auth-Email": "nobody@t.test"}).status_code == 303


def test_health_and_metrics(env: Env) -> None:
    c = env.client()
    assert c.get("/healthz").json()["status"] == "ok"
    c.get("/login")
    metrics = c.get("/metrics").text
    assert 'tally_console_requests_total{method="GET",route="/login",status="200"}' in metrics


def test_sessions_in_the_traces_view(env: Env) -> None:
    env.world.add_trace("st-1", name="turn one", session_id="conv-<1>", user_id="u1", timestamp="2026-01-01T00:00:00Z")
    env.world.add_trace("st-2", name="turn two", session_id="conv-<1>", user_id="u2", timestamp="2026-01-01T00:01:00Z")
    env.world.add_trace("st-3", name="alone")
    c = env.client()
    sign_in(c, "lead@t.test")
    traces = c.get("/traces").text
    assert 'href="/sessions/conv-%3C1%3E"' in traces and "conv-&lt;1&gt;" in traces and "conv-<1>" not in traces
    filtered = c.get("/traces?session_id=conv-<1>").text
    assert 'value="st-1"' in filtered and 'value="st-3"' not in filtered
    listed = c.get("/sessions").text
    assert 'href="/sessions/conv-%3C1%3E"' in listed and listed.count('class="session-row"') == 1
    page = c.get("/sessions/conv-%3C1%3E").text
    assert page.index("turn one") < page.index("turn two") and "alone" not in page
    assert c.get("/sessions/nope").status_code == 403
    assert 'href="/sessions/conv-%3C1%3E"' in c.get("/traces/st-1").text
