"""The REST API through FastAPI's test client, on the real retriever and the real embedded judge."""

from __future__ import annotations

import base64
import json

import pytest

import ui_support as us

pytestmark = pytest.mark.timeout(600)

TOKEN = "test-token-0123456789abcdef"
LOGIN = ("agent", "correct horse battery")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with us.one_torch_thread():
        yield us.make_service(tmp_path_factory.mktemp("api") / "home")


def _client(service, **settings):
    from fastapi.testclient import TestClient

    from ui.server import create_app
    from ui.settings import ServerSettings

    app = create_app(service, ServerSettings(warm_up=False, **settings))
    return TestClient(app)


@pytest.fixture(scope="module")
def client(service):
    with _client(service, max_files=3, max_upload_mb=1.0) as c:
        yield c


@pytest.fixture(scope="module")
def answered(client):
    response = client.post("/api/v1/match", json={"ticket": us.MATCH_TICKET})
    assert response.status_code == 200, response.text
    return response.json()


def _basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _csv(rows: list[tuple[str, str, str, str]]) -> bytes:
    lines = ["id,question,answer,label"] + [",".join(f'"{v}"' for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


# -- answers ------------------------------------------------------------------------------------------


def test_health_and_docs(client):
    health = client.get("/api/v1/health").json()
    assert health["status"] == "ok"
    assert health["documents"] == 1 and health["chunks"] == len(us.FAQ_ROWS)
    assert health["model"] == "SmolLM2-135M-Instruct"
    spec = client.get("/openapi.json").json()
    assert {"/api/v1/match", "/api/v1/documents", "/api/v1/feedback", "/api/v1/health"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_match_returns_the_ask_json_object(answered):
    assert answered["escalate"] is False
    assert answered["match"] == {
        "id": "pw-reset", "question": us.MATCH_TICKET, "answer": us.MATCH_ANSWER,
        "label": "password_reset", "source": "home-faq.csv", "page": None, "section": None,
    }
    assert 0.5 <= answered["confidence"] <= 1
    assert answered["candidates"] and all("score" in c for c in answered["candidates"])
    assert answered["candidates"][0]["id"] == "pw-reset"
    assert isinstance(answered["reasoning"], str) and answered["latency_s"] > 0
    assert answered["answer_id"] and "SmolLM2" in answered["model"]


def test_match_rejects_empty_tickets(client):
    assert client.post("/api/v1/match", json={"ticket": ""}).status_code == 422
    response = client.post("/api/v1/match", json={"ticket": "   "})
    assert response.status_code == 400 and "empty" in response.json()["detail"]
    assert client.post("/api/v1/match", json={}).status_code == 422


def test_feedback_is_stored_and_exported(client, service, answered, tmp_path):
    from app.feedback import export_feedback

    answer_id = answered["answer_id"]
    up = client.post("/api/v1/feedback", json={"answer_id": answer_id, "rating": "up"})
    assert up.status_code == 200 and up.json()["rating"] == "up" and up.json()["correct_id"] is None
    # Naming a FAQ without a rating rates by agreement with the verdict.
    named = client.post("/api/v1/feedback", json={"answer_id": answer_id, "correct_id": "none"})
    assert named.status_code == 200 and named.json() | {"created_at": 0} == {
        "answer_id": answer_id, "rating": "down", "correct_id": "none", "created_at": 0}
    bad = client.post("/api/v1/feedback", json={"answer_id": answer_id, "correct_id": "not-a-candidate"})
    assert bad.status_code == 400 and "not one of this answer's candidates" in bad.json()["detail"]
    assert client.post("/api/v1/feedback", json={"answer_id": "nope", "rating": "up"}).status_code == 404
    assert client.post("/api/v1/feedback", json={"answer_id": answer_id, "rating": "meh"}).status_code == 422
    assert client.post("/api/v1/feedback", json={"answer_id": answer_id}).status_code == 400

    out = tmp_path / "feedback.jsonl"
    assert export_feedback(service.home.feedback_db, out) == 1
    (example,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert example["ticket"] == us.MATCH_TICKET
    assert example["correct_id"] is None and example["verdict_id"] == "pw-reset"
    assert example["rating"] == "down" and "SmolLM2" in example["model"]
    assert example["candidates"][0]["id"] == "pw-reset"
    assert set(example["candidates"][0]) == {"id", "question", "answer", "label", "source", "page", "score",
                                             "rank_score", "section", "rerank_score"}
    assert set(example) == {"ticket", "candidates", "correct_id", "verdict_id", "rating", "model", "created_at"}


# -- documents ----------------------------------------------------------------------------------------


def test_documents_list_upload_delete(client, service):
    listed = client.get("/api/v1/documents").json()
    assert [d["name"] for d in listed] == ["home-faq.csv"]

    body = _csv([("wifi", "The wifi keeps dropping", "Restart the router and update its firmware.", "wifi")])
    response = client.post("/api/v1/documents", files=[("files", ("extra.csv", body, "text/csv"))])
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["status"] == "added" and result["document"]["rows"] == 1
    doc_id = result["document"]["id"]
    assert (service.uploads / doc_id / "extra.csv").read_bytes() == body
    assert response.json()["documents"] == 2

    again = client.post("/api/v1/documents", files=[("files", ("copy.csv", body, "text/csv"))])
    assert again.status_code == 200 and again.json()["results"][0]["status"] == "unchanged"
    assert sorted(p.name for p in service.uploads.iterdir()) == sorted(
        [doc_id])  # nothing left behind by the duplicate

    deleted = client.delete(f"/api/v1/documents/{doc_id}")
    assert deleted.status_code == 200 and deleted.json()["name"] == "extra.csv"
    assert not (service.uploads / doc_id).exists()
    assert [d["name"] for d in client.get("/api/v1/documents").json()] == ["home-faq.csv"]
    assert client.delete(f"/api/v1/documents/{doc_id}").status_code == 404


def test_rejected_uploads_give_reasons_and_lose_nothing(client, service):
    outside = service.home.root.parent
    before = set(outside.rglob("*"))
    good = _csv([("vpn", "VPN will not connect", "Reinstall the VPN profile from the portal.", "vpn")])
    too_big = b"id,question,answer\n" + b"x,y," + b"z" * (1024 * 1024 + 10) + b"\n"
    response = client.post("/api/v1/documents", files=[
        ("files", ("../../../escape.csv", good, "text/csv")),
        ("files", ("tool.exe", b"MZ\x90\x00", "application/octet-stream")),
        ("files", ("huge.csv", too_big, "text/csv")),
    ])
    assert response.status_code == 207, response.text
    escaped, exe, huge = response.json()["results"]
    assert escaped["status"] == "added" and escaped["document"]["name"] == "escape.csv"
    assert exe["status"] == "failed" and "unsupported file type '.exe'" in exe["error"]
    assert huge["status"] == "failed" and "over the 1 MiB limit" in huge["error"]
    # The traversal name was reduced to its base name, inside home/uploads/<id>/.
    stored = list(service.uploads.rglob("escape.csv"))
    assert len(stored) == 1 and stored[0].parent.parent == service.uploads
    created = {p for p in set(outside.rglob("*")) - before if service.home.root not in p.parents}
    assert not created, created
    assert not [p for p in service.uploads.iterdir() if p.name.startswith(".incoming")]

    only_bad = client.post("/api/v1/documents", files=[("files", ("..\\..\\evil.sh", b"rm -rf /", "text/plain"))])
    assert only_bad.status_code == 400
    assert "unsupported file type '.sh'" in only_bad.json()["results"][0]["error"]
    client.delete(f"/api/v1/documents/{escaped['document']['id']}")


def test_cross_site_posts_are_refused(client):
    body = _csv([("x", "q", "a", "l")])
    evil = client.post("/api/v1/documents", files=[("files", ("x.csv", body, "text/csv"))],
                       headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403
    assert client.post("/api/v1/feedback", json={"answer_id": "x", "rating": "up"},
                       headers={"Origin": "http://evil.example"}).status_code == 403
    # The page's own origin passes (the test client's host is "testserver").
    own = client.post("/api/v1/feedback", json={"answer_id": "x", "rating": "up"},
                      headers={"Origin": "http://testserver"})
    assert own.status_code == 404


def test_upload_request_limits(client):
    files = [("files", (f"f{i}.csv", b"question,answer\nq,a\n", "text/csv")) for i in range(4)]
    response = client.post("/api/v1/documents", files=files)
    assert response.status_code == 400 and "at most 3 files" in response.json()["detail"]
    # max_files (3) x 1 MiB + 1 MiB: a bigger request is refused before it is read.
    blob = b"a" * (4 * 1024 * 1024 + 100)
    response = client.post("/api/v1/documents", files=[("files", ("big.csv", blob, "text/csv"))])
    assert response.status_code == 413


# -- login --------------------------------------------------------------------------------------------


def test_login_protects_api_and_page(service):
    with _client(service, username=LOGIN[0], password=LOGIN[1], api_token=TOKEN) as client:
        for method, path in (("get", "/api/v1/documents"), ("post", "/api/v1/match"),
                             ("post", "/api/v1/feedback"), ("post", "/api/v1/documents"),
                             ("delete", "/api/v1/documents/x")):
            response = getattr(client, method)(path)
            assert response.status_code == 401, (method, path, response.status_code)
            assert "Bearer" in response.headers["www-authenticate"]
        assert client.get("/api/v1/documents", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert client.get("/api/v1/documents", headers=_basic(*LOGIN)).status_code == 200
        assert client.get("/api/v1/documents", headers=_basic(LOGIN[0], "wrong")).status_code == 401
        assert client.get("/api/v1/documents", headers={"Authorization": "Bearer wrong-token-wrong-token"}
                          ).status_code == 401
        # Health answers without credentials but tells nothing about the knowledge base.
        assert set(client.get("/api/v1/health").json()) == {"status", "model_loaded"}
        assert client.get("/api/v1/health", headers=_basic(*LOGIN)).json()["documents"] >= 1
        # The page: its config needs a session from the login form.
        assert client.get("/config").status_code == 401
        assert client.post("/login", data={"username": LOGIN[0], "password": "wrong"}).status_code >= 400
        assert client.post("/login", data={"username": LOGIN[0], "password": LOGIN[1]}).status_code == 200
        assert client.get("/config").status_code == 200


def test_without_login_the_page_is_open_and_only_local(client):
    from ui.server import check_host
    from ui.settings import ServerSettings, SettingsError

    assert client.get("/config").status_code == 200
    open_settings = ServerSettings()
    for host in ("127.0.0.1", "localhost", "::1"):
        check_host(host, open_settings)
    for host in ("0.0.0.0", "192.168.1.20", "::"):
        with pytest.raises(SettingsError, match="without a login"):
            check_host(host, open_settings)
    check_host("0.0.0.0", ServerSettings(username="a", password="b"))
    with pytest.raises(SettingsError):
        ServerSettings(username="a")
    with pytest.raises(SettingsError):
        ServerSettings(api_token=TOKEN)
    env = {"AGENT_HELPER_USERNAME": "u", "AGENT_HELPER_PASSWORD": "p", "AGENT_HELPER_MAX_UPLOAD_MB": "2"}
    settings = ServerSettings.from_env(env)
    assert settings.auth_enabled and settings.max_upload_bytes == 2 * 2**20
    assert "'p'" not in repr(settings)


def test_sanitize_filename():
    from app.uploads import UploadRejected, sanitize_filename

    assert sanitize_filename("../../etc/passwd.csv") == "passwd.csv"
    assert sanitize_filename("C:\\Users\\me\\FAQ 2024.PDF") == "FAQ 2024.pdf"
    assert sanitize_filename("..hidden.jsonl") == "hidden.jsonl"
    assert sanitize_filename("a<b>|c\x00.csv") == "a_b_c_.csv"
    assert len(sanitize_filename("x" * 500 + ".pdf")) <= 120
    for bad in ("", "..", "/", "notes.txt", "archive.csv.exe", ".csv"):
        with pytest.raises(UploadRejected):
            sanitize_filename(bad)


def test_feedback_export_rules(tmp_path):
    from app.feedback import FeedbackStore, export_feedback

    store = FeedbackStore(tmp_path / "feedback.sqlite")
    candidates = [{"id": "a", "question": "qa", "answer": "A", "label": None, "source": "s.csv", "page": None,
                   "score": 0.9, "rank_score": 0.1},
                  {"id": "b", "question": "qb", "answer": "B", "label": None, "source": "s.csv", "page": 2,
                   "score": 0.5, "rank_score": 0.05}]
    matched = {"match": {"id": "a"}, "escalate": False}
    escalated = {"match": None, "escalate": True}
    up_match = store.record_answer("t1", candidates, matched, "m")
    up_escalate = store.record_answer("t2", candidates, escalated, "m")
    down_unnamed = store.record_answer("t3", candidates, matched, "m")
    named_other = store.record_answer("t4", candidates, matched, "m")
    store.record_answer("t5", candidates, matched, "m")  # never rated: not exported
    store.give(up_match, "up")
    store.give(up_escalate, "up")
    store.give(down_unnamed, "down")
    assert store.give(named_other, correct_id="b").rating == "down"
    assert store.give(named_other, rating="down").correct_id == "b"  # a later rating keeps the name
    store.close()

    out = tmp_path / "out" / "examples.jsonl"
    assert export_feedback(tmp_path / "feedback.sqlite", out) == 3
    rows = {r["ticket"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"t1", "t2", "t4"}
    assert (rows["t1"]["correct_id"], rows["t1"]["verdict_id"], rows["t1"]["rating"]) == ("a", "a", "up")
    assert (rows["t2"]["correct_id"], rows["t2"]["verdict_id"], rows["t2"]["rating"]) == (None, None, "up")
    assert (rows["t4"]["correct_id"], rows["t4"]["verdict_id"], rows["t4"]["rating"]) == ("b", "a", "down")
    assert rows["t4"]["candidates"] == candidates
    assert export_feedback(tmp_path / "missing.sqlite", tmp_path / "empty.jsonl") == 0


def test_a_docx_upload_is_read_with_its_sections(client, service):
    import io

    from docx import Document

    document = Document()
    document.add_heading("Deliveries", 1)
    document.add_heading("Can I change the delivery address after ordering?", 2)
    document.add_paragraph("Yes, until the parcel ships: open Orders > Change address.")
    body = io.BytesIO()
    document.save(body)
    mime = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    response = client.post("/api/v1/documents", files=[("files", ("Deliveries.docx", body.getvalue(), mime))])
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["status"] == "added" and result["document"]["faq_pairs"] == 1
    assert result["document"]["ocr_pages"] == "" and result["document"]["pages"] == 0
    doc_id = result["document"]["id"]
    assert (service.uploads / doc_id / "Deliveries.docx").read_bytes() == body.getvalue()
    found = service.search("I want my parcel sent to another address", k=1)[0]
    assert (found.source, found.section) == ("Deliveries.docx", "Deliveries")
    assert client.delete(f"/api/v1/documents/{doc_id}").status_code == 200
