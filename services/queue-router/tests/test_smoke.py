from queue_router.testing import Service


async def test_queue_crud_and_manual_items(svc: Service) -> None:
    _, auth = await svc.project()
    r = await svc.client.post("/api/v1/queues", headers=auth, json={"name": "q1", "reviewers_per_item": 2})
    assert r.status_code == 201, r.text
    qid = r.json()["id"]
    r = await svc.client.post(f"/api/v1/queues/{qid}/items", headers=auth,
                              json={"items": [{"object_type": "TRACE", "object_id": "t1"}]})
    assert r.status_code == 201, r.text
    assert len(r.json()["added"]) == 1
    r = await svc.client.post(f"/api/v1/queues/{qid}/next", headers=auth, json={"reviewer": "alice"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["item"]["object_id"] == "t1"
    r = await svc.client.post(f"/api/v1/queues/{qid}/next", headers=auth, json={"reviewer": "alice"})
    assert r.status_code == 204
