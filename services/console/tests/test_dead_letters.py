"""The dead-letter pages against the fakes: list, single view, replay and discard (admins only, with CSRF), and a
hostile payload shown as escaped text."""

from __future__ import annotations

from console.testing.pages import Env, sign_in

HOSTILE = {"name": "<script>alert(1)</script>", "note": "<img src=x onerror=alert(2)>", "s": "\" onmouseover=x \""}


def test_admin_lists_views_and_replays_a_dead_letter_with_its_payload_escaped(env: Env) -> None:
    dl = env.world.add_dead_letter(HOSTILE, reason="invalid RecordScore: <b>value</b> above the maximum")
    c = env.client()
    token = sign_in(c, "lead@t.test")
    listing = c.get("/setup/dead-letters")
    assert listing.status_code == 200
    assert 'href="/setup/dead-letters"' in listing.text  # in the setup nav
    assert "rule:maximum" in listing.text and "scoring" in listing.text and dl["id"] in listing.text
    for page in (listing.text, c.get(f"/setup/dead-letters/{dl['id']}").text):
        assert "<script>alert(1)" not in page and "<img src=x" not in page and "<b>value</b>" not in page
        assert "&lt;img src=x onerror=alert(2)&gt;" in page
    single = c.get(f"/setup/dead-letters/{dl['id']}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in single and "RecordScore" in single

    # a form without the session's token changes nothing
    assert c.post(f"/setup/dead-letters/{dl['id']}/replay", data={}).status_code == 403
    assert dl["status"] == "open"
    r = c.post(f"/setup/dead-letters/{dl['id']}/replay",
               data={"csrf": token, "back": f"/setup/dead-letters/{dl['id']}"})
    assert r.status_code == 303 and r.headers["location"] == f"/setup/dead-letters/{dl['id']}"
    assert (dl["status"], dl["replay_count"]) == ("replayed", 1)
    after = c.get(r.headers["location"]).text
    assert "Replayed 1 dead letters" in after and "replayed by Lead" in after
    # replayed ones leave the open list
    assert dl["id"] not in c.get("/setup/dead-letters").text


def test_discard_one_and_bulk_by_reason(env: Env) -> None:
    a = env.world.add_dead_letter({"a": 1})
    b = env.world.add_dead_letter({"b": 2}, reason_code="validation")
    x = env.world.add_dead_letter({"c": 3}, reason_code="validation")
    c = env.client()
    token = sign_in(c, "lead@t.test")
    r = c.post(f"/setup/dead-letters/{a['id']}/discard", data={"csrf": token})
    assert r.status_code == 303 and a["status"] == "discarded"
    assert a["id"] not in c.get("/setup/dead-letters").text
    assert a["id"] in c.get("/setup/dead-letters?status=discarded").text
    r = c.post("/setup/dead-letters", data={"csrf": token, "action": "replay", "reason_code": "validation"})
    assert r.status_code == 303 and (b["status"], x["status"]) == ("replayed", "replayed")
    assert env.world.calls[-1] == ("replay_dead_letters", (None, "validation"))
    page = c.get("/setup/dead-letters?status=all&reason_code=validation").text
    assert "validation (2)" in page


def test_binary_and_long_payloads_are_labelled_and_folded(env: Env) -> None:
    raw = env.world.add_dead_letter(b"\xff\xfe not utf-8", reason_code="decode", event_type=None)
    long = env.world.add_dead_letter({"text": "line\n" * 2000})
    c = env.client()
    sign_in(c, "lead@t.test")
    page = c.get(f"/setup/dead-letters/{raw['id']}").text
    assert "base64" in page and raw["original"]["base64"] in page
    page = c.get(f"/setup/dead-letters/{long['id']}").text
    assert "Show all (" in page


def test_only_admins_see_dead_letters(env: Env) -> None:
    dl = env.world.add_dead_letter({"a": 1})
    c = env.client()
    token = sign_in(c, "rev@t.test")
    assert c.get("/setup/dead-letters").status_code == 403
    assert c.get(f"/setup/dead-letters/{dl['id']}").status_code == 403
    assert c.post(f"/setup/dead-letters/{dl['id']}/replay", data={"csrf": token}).status_code == 403
    assert dl["status"] == "open"
    assert "/setup/dead-letters" not in c.get("/setup/configs").text
