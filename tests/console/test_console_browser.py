"""The console in a real browser (Debian's Chromium through Playwright): an operator signs in,
approves a tool call, pauses and resumes an instance, finds both in the audit trail, and asks
the policy simulator; the page's Content-Security-Policy blocks nothing the console itself uses."""

from __future__ import annotations

from typing import Any

from tests.console.conftest import Console
from tests.server.serving import SECRET, request_approval


def test_an_operator_approves_pauses_resumes_audits_and_simulates_in_a_browser(console: Console, browser: Any) -> None:
    approval_id = request_approval(console.client, console.tokens["runtime"])
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    context.set_default_timeout(10_000)
    page = context.new_page()
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text) if "Content Security Policy" in message.text else None)
    nav = page.get_by_role("navigation", name="Pages")
    try:
        # Sign in: a wrong token is refused on the form; the right one lands where it was going.
        page.goto(f"{console.base}/ui/approvals")
        assert page.url.startswith(f"{console.base}/ui/login")
        page.get_by_label("Operator token").fill("arm_wrong")
        page.get_by_role("button", name="Sign in").click()
        assert page.get_by_role("alert").inner_text() == "unknown token"
        page.get_by_label("Operator token").fill(console.tokens["olga"])
        page.get_by_role("button", name="Sign in").click()
        assert page.url == f"{console.base}/ui/approvals"

        # Approve the refund: the request shows its tool, redacted arguments, cost and reasons.
        page.get_by_role("link", name=str(approval_id), exact=True).click()
        body = page.locator("main").inner_text()
        assert "payments.refund" in body and "INV-1042" in body and SECRET not in body and "0.25" in body
        assert "approval" in body.lower()
        page.get_by_label("Justification (kept in the audit trail)").fill("customer refund agreed by phone")
        page.get_by_role("button", name="Approve").click()
        assert "approved by olga — now APPROVED" in page.get_by_role("status").inner_text()

        # Pause, confirm, then resume an instance: a reason is required and each control is confirmed.
        nav.get_by_role("link", name="Instances").click()
        page.get_by_role("link", name="acme:app-dev-g1-0").click()
        page.get_by_label("pause").check()
        page.get_by_label("Reason (required, kept in the audit trail)").fill("runaway refunds")
        page.get_by_role("button", name="Review…").click()
        assert "PROVISIONING → PAUSED" in page.locator("main").inner_text()
        page.get_by_role("button", name="Confirm: pause").click()
        assert "instance acme:app-dev-g1-0 PROVISIONING → PAUSED" in page.get_by_role("status").inner_text()
        page.get_by_label("resume").check()
        page.get_by_label("Reason (required, kept in the audit trail)").fill("refunds look normal again")
        page.get_by_role("button", name="Review…").click()
        page.get_by_role("button", name="Confirm: resume").click()
        # It never sent a heartbeat: resumed, it goes back to waiting for its first one.
        assert "PAUSED → PROVISIONING" in page.get_by_role("status").inner_text()

        # Both are in the audit trail, with who did them and why; the chain verifies.
        nav.get_by_role("link", name="Audit").click()
        page.get_by_label("Type").fill("EMERGENCY_PAUSE")
        page.get_by_role("button", name="Filter").click()
        rows = page.locator("tbody tr")
        assert rows.count() == 1 and "runaway refunds" in rows.first.inner_text() and "olga" in rows.first.inner_text()
        page.get_by_label("Type").fill("APPROVAL_DECIDED")
        page.get_by_role("button", name="Filter").click()
        assert "customer refund agreed by phone" in page.locator("tbody").inner_text()
        page.get_by_role("link", name="Verify the chain now").click()
        assert page.get_by_role("status").inner_text().startswith("The chain verifies")

        # The simulator answers under the applied commit, and records nothing.
        nav.get_by_role("link", name="Simulator").click()
        page.get_by_label("Instance or version").fill("acme:app-dev-g1-1")
        page.get_by_label("Tool").fill("payments.refund")
        page.get_by_label("Arguments (JSON object)").fill('{"invoice": "INV-7", "amount": 3}')
        page.get_by_role("button", name="Simulate").click()
        assert page.locator("#answer").inner_text() == "NEEDS_APPROVAL"
        page.get_by_label("Tool").fill("crm.lookup")
        page.get_by_role("button", name="Simulate").click()
        assert page.locator("#answer").inner_text() == "ALLOW"
        # Under a branch that denies it (not applied), the same call is denied, naming the commit.
        page.get_by_label("Under the policy of").fill("deny-lookups")
        page.get_by_role("button", name="Simulate").click()
        assert page.locator("#answer").inner_text() == "DENY" and "deny-lookups@sha1:" in page.locator("main").inner_text()
        page.get_by_label("Under the policy of").fill("")
        page.get_by_label("a version (a new instance of it)").check()
        page.get_by_label("Instance or version").fill("app@1.0.0")
        page.get_by_label("Tool").fill("shell.exec")
        page.get_by_role("button", name="Simulate").click()
        assert page.locator("#answer").inner_text() == "DENY" and "shell.exec" in page.locator("main").inner_text()

        # The overview counts the decision that needed approval, and nothing the simulator asked.
        nav.get_by_role("link", name="Overview").click()
        assert "1 pending" not in page.locator("main").inner_text()  # the approval was decided
        nav.get_by_role("link", name="Decisions").click()
        decisions = page.locator("tbody tr")
        assert decisions.count() == 1 and "NEEDS_APPROVAL" in decisions.first.inner_text()
        assert blocked == []
    finally:
        context.close()

    # Without JavaScript every page still reads and every form still works.
    plain = browser.new_context(java_script_enabled=False)
    try:
        page = plain.new_page()
        page.goto(f"{console.base}/ui/")
        page.get_by_label("Operator token").fill(console.tokens["olga"])
        page.get_by_role("button", name="Sign in").click()
        assert "Instances by state per environment" in page.locator("main").inner_text()
        page.goto(f"{console.base}/ui/instances/acme:app-dev-g1-1")
        page.get_by_label("quarantine").check()
        page.get_by_label("Reason (required, kept in the audit trail)").fill("leaking data")
        page.get_by_role("button", name="Review…").click()
        page.get_by_role("button", name="Confirm: quarantine").click()
        assert "PROVISIONING → QUARANTINED" in page.get_by_role("status").inner_text()
    finally:
        plain.close()
