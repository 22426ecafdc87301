"""The console's sign-in, sessions and forms over plain HTTP (a real server on loopback): what
a browser is sent, what a forged or cross-site form gets, and that a viewer sees but cannot act."""

from __future__ import annotations

import re
import time

import httpx
import sqlalchemy as sa

from reconciler.oversight import access
from reconciler.state import tables
from tests.console.conftest import Console
from tests.server.serving import NOW, SECRET, auth, request_approval


def sign_in(console: Console, token: str) -> httpx.Client:
    """A client holding a session of ``token``."""
    client = httpx.Client(base_url=console.base, timeout=10)
    answer = client.post("/ui/login", data={"token": token, "next": "/ui/approvals"})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/approvals", answer.text
    return client


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def approval_status(console: Console, approval_id: int) -> str:
    with console.engine.connect() as connection:
        return str(connection.execute(sa.select(tables.approvals.c.status).where(tables.approvals.c.id == approval_id)).scalar())


def test_sign_in_gives_a_strict_http_only_cookie_and_pages_a_content_security_policy(console: Console) -> None:
    anonymous = httpx.Client(base_url=console.base, timeout=10)
    answer = anonymous.get("/ui/instances?state=PAUSED")
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/login?next=%2Fui%2Finstances%3Fstate%3DPAUSED"

    for token, why in [
        ("arm_not-a-token", "unknown token"),
        (console.tokens["runtime"], "the console needs an operator token"),
    ]:
        refused = anonymous.post("/ui/login", data={"token": token})
        assert refused.status_code == 401 and why in refused.text and "Set-Cookie" not in refused.headers
    with console.engine.begin() as connection:
        access.revoke(connection, "gone", NOW)
    assert "was revoked" in anonymous.post("/ui/login", data={"token": console.tokens["revoked"]}).text

    answer = anonymous.post("/ui/login", data={"token": console.tokens["olga"], "next": "//evil.example/"})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/"  # never off-site
    cookie = answer.headers["set-cookie"]
    for flag in ("HttpOnly", "SameSite=strict", "Path=/ui", "Max-Age=28800"):
        assert flag.lower() in cookie.lower(), cookie
    assert console.tokens["olga"] not in cookie

    page = anonymous.get("/ui/")
    assert page.status_code == 200 and "olga · tenant acme" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text and " style=" not in page.text  # nothing inline the policy would block

    # Signing out ends the session on the server, not only in the browser.
    session = anonymous.cookies.get("arm_session")
    anonymous.post("/ui/logout", data={"csrf": csrf_of(page.text)})
    again = httpx.Client(base_url=console.base, timeout=10, cookies={"arm_session": session or ""})
    assert again.get("/ui/").status_code == 303


def test_forms_without_the_session_s_csrf_token_or_from_another_site_change_nothing(console: Console) -> None:
    approval_id = request_approval(console.client, console.tokens["runtime"])
    olga = sign_in(console, console.tokens["olga"])
    page = olga.get(f"/ui/approvals/{approval_id}")
    assert "payments.refund" in page.text and "INV-1042" in page.text and SECRET not in page.text
    assert "0.25" in page.text and "run-7" in page.text
    form = {"decision": "APPROVE", "justification": "refund agreed with the customer"}

    forged = olga.post(f"/ui/approvals/{approval_id}/decision", data=form)
    assert forged.status_code == 403 and "CSRF token" in forged.text
    cross_site = olga.post(
        f"/ui/approvals/{approval_id}/decision", data={**form, "csrf": csrf_of(page.text)},
        headers={"Origin": "https://evil.example"},
    )  # fmt: skip
    assert cross_site.status_code == 403 and "another site" in cross_site.text
    too_big = olga.post(f"/ui/approvals/{approval_id}/decision", data={**form, "csrf": csrf_of(page.text), "x": "y" * 70_000})
    # Refused by the server's body limit for every route (64 KiB), before the form is read.
    assert too_big.status_code == 413 and "larger than" in too_big.text
    blank = olga.post(f"/ui/approvals/{approval_id}/decision", data={**form, "justification": " ", "csrf": csrf_of(page.text)})
    assert blank.status_code == 422 and "justification may not be blank" in blank.text
    assert approval_status(console, approval_id) == "PENDING"
    for answer in (forged, cross_site, too_big, blank):
        assert "Traceback" not in answer.text and answer.headers["content-type"].startswith("text/html")

    done = olga.post(f"/ui/approvals/{approval_id}/decision", data={**form, "csrf": csrf_of(page.text)})
    assert done.status_code == 303 and approval_status(console, approval_id) == "APPROVED"
    assert "approved by olga" in olga.get(done.headers["location"]).text


def test_a_viewer_sees_the_queue_and_instances_but_every_action_is_refused_as_the_api_refuses_it(console: Console) -> None:
    approval_id = request_approval(console.client, console.tokens["runtime"])
    vic = sign_in(console, console.tokens["vic"])
    page = vic.get(f"/ui/approvals/{approval_id}")
    assert page.status_code == 200 and "payments.refund" in page.text
    assert 'value="APPROVE"' not in page.text and "lacks it" in page.text
    csrf = csrf_of(page.text)
    refused = vic.post(f"/ui/approvals/{approval_id}/decision", data={"decision": "APPROVE", "justification": "x", "csrf": csrf})
    api = console.client.post(
        f"/v1/approvals/{approval_id}/decision",
        json={"decision": "APPROVE", "justification": "x"},
        headers=auth(console.tokens["vic"]),
    )
    assert refused.status_code == api.status_code == 403
    assert api.json()["message"] in refused.text.replace("&#39;", "'")
    assert approval_status(console, approval_id) == "PENDING"

    instance = vic.get("/ui/instances/acme:app-dev-g1-0")
    assert instance.status_code == 200 and "you may look, not act" in instance.text and 'name="control"' not in instance.text
    control = {"control": "pause", "reason": "testing", "confirm": "yes", "csrf": csrf}
    assert vic.post("/ui/instances/acme:app-dev-g1-0/controls", data=control).status_code == 403
    # Another tenant's objects are not there at all.
    assert vic.get("/ui/instances/globex:app-dev-g1-0").status_code == 404
    # Another tenant's instance is answered as one that does not exist, as the API answers it.
    assert vic.post("/ui/instances/globex:app-dev-g1-0/controls", data=control).status_code == 404
    assert "globex" not in vic.get("/ui/instances").text
    assert vic.get("/ui/audit").status_code == 403  # audit:read is a role's permission


def test_a_revoked_token_ends_its_sessions(console: Console) -> None:
    olga = sign_in(console, console.tokens["revoked"])
    assert olga.get("/ui/").status_code == 200
    with console.engine.begin() as connection:
        access.revoke(connection, "gone", NOW)
    # The token cache trusts a lookup for a second: poll until the revocation shows.
    deadline = time.monotonic() + 10
    while olga.get("/ui/").status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert olga.get("/ui/").status_code == 303


def test_the_simulator_refuses_what_it_cannot_ask_naming_the_field_and_records_nothing(console: Console) -> None:
    olga = sign_in(console, console.tokens["olga"])
    csrf = csrf_of(olga.get("/ui/simulate").text)
    ask = {"csrf": csrf, "target": "instance", "name": "acme:app-dev-g1-0", "tool": "crm.lookup", "args": "{}"}
    for changed, status, why in [
        ({"args": "[1, 2]"}, 422, "field 'args' must be a JSON object"),
        ({"args": '{"amount": NaN}'}, 422, "NaN is not a number JSON allows"),
        ({"cost": "1e400"}, 422, "field 'cost' must be a finite number"),
        ({"tool": " "}, 422, "name the tool to call"),
        ({"name": "globex:app-dev-g1-0"}, 404, "does not exist in tenant 'acme'"),
        ({"target": "version", "name": "app@9.9.9"}, 404, "version 'app@9.9.9' does not exist in tenant 'acme'"),
        ({"ref": "no-such-branch"}, 409, "no-such-branch"),
    ]:
        answer = olga.post("/ui/simulate", data={**ask, **changed})
        assert answer.status_code == status and why in answer.text.replace("&#39;", "'"), (changed, answer.text)
        assert "Traceback" not in answer.text
    assert olga.post("/ui/simulate", data=ask).status_code == 200
    with console.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(tables.op_events)).scalar_one() == 0
    # Lists page and filter as they say; a filter value they do not know is refused by name.
    assert "No instances." in olga.get("/ui/instances?page=2").text
    assert "acme:app-dev-g1-1" in olga.get("/ui/instances?state=provisioning").text
    assert olga.get("/ui/instances?state=sleeping").status_code == 422
    assert olga.get("/ui/decisions?result=MAYBE").status_code == 422
    assert olga.get("/ui/audit?since=yesterday").status_code == 422
    missing = olga.get("/ui/no-such-page")
    assert missing.status_code == 404 and "the console has no page /ui/no-such-page" in missing.text


def test_the_tenant_kill_switch_is_confirmed_then_holds_every_instance_until_resumed(console: Console) -> None:
    olga = sign_in(console, console.tokens["olga"])
    page = olga.get("/ui/instances")
    assert "Tenant kill switch" in page.text
    assert "Tenant kill switch" not in sign_in(console, console.tokens["vic"]).get("/ui/instances").text
    form = {"csrf": csrf_of(page.text), "control": "pause", "reason": "incident 42"}
    review = olga.post("/ui/tenant/controls", data=form)
    assert review.status_code == 200 and "pause every instance of tenant acme" in review.text and "(2 live now)" in review.text
    assert olga.post("/ui/tenant/controls", data={**form, "reason": ""}).status_code == 422
    done = olga.post("/ui/tenant/controls", data={**form, "confirm": "yes"})
    assert done.status_code == 303
    listed = console.client.get("/v1/instances", headers=auth(console.tokens["runtime"])).json()
    assert {i["state"] for i in listed} == {"PAUSED"} and {i["tenant_hold"] for i in listed} == {"pause"}
    assert "tenant acme, 2 instance(s) changed" in olga.get("/ui/instances").text
    olga.post("/ui/tenant/controls", data={**form, "control": "resume", "reason": "resolved", "confirm": "yes"})
    listed = console.client.get("/v1/instances", headers=auth(console.tokens["runtime"])).json()
    assert {i["tenant_hold"] for i in listed} == {None}
