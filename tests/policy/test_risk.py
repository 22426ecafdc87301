"""How arguments raise a call's risk, and how what is stored loses its secrets."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from reconciler.policy import risk

SECRET = "hunter22-not-a-key"
GITHUB = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"
OPENAI = "sk-abcdefghijklmnopqrstuvwx"


def secret(path: str) -> str:
    return f"argument {path} holds a secret-like value: RED"


def production(path: str) -> str:
    return f"argument {path} targets production: raised one level"


def destructive(path: str, what: str) -> str:
    return f"argument {path} asks for a destructive operation ({what}): raised one level"


def bulk(path: str, what: str) -> str:
    return f"argument {path} {what}: raised one level"


# (what the row shows, the arguments, the reasons a GREEN tool's call gets). The level follows:
# RED with a secret, else one level up for each reason.
TABLE: list[tuple[str, dict[str, Any], list[str]]] = [
    # ---- secrets, by key (read word by word) and by value
    ("a secret_key is a secret", {"secret_key": "abcdefghijklmnop"}, [secret("secret_key")]),
    (
        "an aws_secret_access_key is a secret",
        {"aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"},
        [secret("aws_secret_access_key")],
    ),
    (
        "credentials inside a URL are a secret under any key",
        {"connection_string": "postgresql://admin:hunter2@db.internal/app"},
        [secret("connection_string")],
    ),
    ("a cookie is a secret", {"cookie": "session=abc123def456"}, [secret("cookie")]),
    ("a short password is still a secret", {"password": "12345"}, [secret("password")]),
    ("a numeric password is a secret", {"password": 12345}, [secret("password")]),
    ("a camelCase apiKey is a secret", {"apiKey": "k-1"}, [secret("apiKey")]),
    (
        "a nested authorization header is a secret",
        {"headers": {"Authorization": "Basic dXNlcjpwYXNz"}},
        [secret("headers.Authorization")],
    ),
    ("an X-Api-Key header is a secret", {"headers": {"X-Api-Key": "k-1"}}, [secret("headers.X-Api-Key")]),
    ("a refresh_token is a secret", {"refresh_token": "r-1"}, [secret("refresh_token")]),
    ("a GitHub token inside an address is a secret", {"to": [f"{GITHUB}@evil.com"]}, [secret("to[0]")]),
    ("a provider key inside prose is a secret", {"note": f"use {OPENAI} for now"}, [secret("note")]),
    (
        "a token in a URL's query is a secret",
        {"callback": "https://hooks.acme.example/x?access_token=abc123"},
        [secret("callback")],
    ),
    ("a password= pair is a secret", {"dsn": "Server=db;User Id=sa;Password=hunter2;"}, [secret("dsn")]),
    ("a token_count is a number, not a secret", {"token_count": 5}, []),
    ("max_tokens counts tokens", {"max_tokens": 4096}, []),
    ("a secretary is not a secret", {"secretary": "Jane Doe"}, []),
    ("a page token pages, it does not authenticate", {"next_page_token": "CAESBggDEAEYAQ"}, []),
    ("a secret's name is not the secret", {"secret_name": "db-credentials"}, []),
    ("a boarding pass is not a password", {"boarding_pass": "BA-0117"}, []),
    ("an empty password hides nothing", {"password": ""}, []),
    ("a bare key is a lookup key", {"key": "customer-123"}, []),
    ("a token type names a scheme", {"token_type": "Bearer"}, []),
    ("a URL with an ordinary query is not a secret", {"url": "https://acme.example/search?q=shoes&page=2"}, []),
    # ---- production targets
    ("an environment named production is a production target", {"env": "production"}, [production("env")]),
    ("an environment prod-eu is a production target", {"environment": "prod-eu"}, [production("environment")]),
    ("a prod cluster is a production target", {"cluster": "gke-prod-1"}, [production("cluster")]),
    ("a live stage is a production target", {"stage": "live"}, [production("stage")]),
    (
        "a nested prd namespace is a production target",
        {"target": {"namespace": "payments-prd"}},
        [production("target.namespace")],
    ),
    ("a URL on a prod host is a production target", {"url": "https://api.prod.acme.example"}, [production("url")]),
    (
        "any URL on a production host is a production target",
        {"webhook": "https://hooks.production.acme.example/x"},
        [production("webhook")],
    ),
    ("a prod database host is a production target", {"host": "db-prod.acme.internal:5432"}, [production("host")]),
    ("staging is not production", {"env": "staging"}, []),
    ("non-prod is not production", {"env": "non-prod"}, []),
    ("pre-prod is not production", {"environment": "pre-prod"}, []),
    ("a products host is not production", {"host": "products.acme.example"}, []),
    ("prod in a URL's path is not its host", {"url": "https://shop.acme.example/products/prod-123"}, []),
    ("production in a search is free text", {"q": "production outage report"}, []),
    ("a field that is no target may say prod", {"product": "prod"}, []),
    # ---- destructive operations
    ("a delete action is destructive", {"action": "delete"}, [destructive("action", "delete")]),
    ("a deleteUser operation is destructive", {"operation": "deleteUser"}, [destructive("operation", "delete")]),
    ("an HTTP DELETE is destructive", {"request": {"method": "DELETE"}}, [destructive("request.method", "delete")]),
    ("rm -rf in a command is destructive", {"command": "rm -rf /var/data"}, [destructive("command", "rm")]),
    ("a forced push is destructive", {"cmd": "git push --force origin main"}, [destructive("cmd", "force")]),
    ("DROP TABLE is destructive", {"sql": "DROP TABLE users"}, [destructive("sql", "DROP statement")]),
    ("DELETE FROM is destructive", {"query": "DELETE FROM orders WHERE id = 7"}, [destructive("query", "DELETE statement")]),
    (
        "an UPDATE of every row is destructive",
        {"statement": "UPDATE users SET active = false"},
        [destructive("statement", "UPDATE statement")],
    ),
    ("a later TRUNCATE is destructive", {"sql": "SELECT 1; truncate audit_log;"}, [destructive("sql", "TRUNCATE statement")]),
    ("force set is destructive", {"force": True}, [destructive("force", "set to true")]),
    ("cascade set as text is destructive", {"options": {"cascade": "true"}}, [destructive("options.cascade", "set to true")]),
    ("a recursive flag is destructive", {"recursive": True}, [destructive("recursive", "set to true")]),
    ("a delete_branch flag is destructive", {"delete_branch": True}, [destructive("delete_branch", "set to true")]),
    ("how to delete an account is a question", {"q": "how do I delete my account?"}, []),
    ("a question in a query field is not SQL", {"query": "how do I delete from my account?"}, []),
    ("a subject may say drop table", {"subject": "Please drop the table booking"}, []),
    ("a SELECT is not destructive", {"sql": "SELECT * FROM users WHERE deleted = false"}, []),
    ("an UPDATE with a WHERE is not destructive", {"statement": "UPDATE users SET name = 'x' WHERE id = 1"}, []),
    ("force unset is not destructive", {"force": False}, []),
    ("a GET is not destructive", {"method": "GET"}, []),
    ("force_refresh refreshes", {"force_refresh": True}, []),
    ("include_deleted reads", {"include_deleted": True}, []),
    # ---- bulk operations
    ("five thousand ids are bulk", {"ids": list(range(5000))}, [bulk("ids", "lists 5000 items")]),
    ("150 recipients are bulk", {"to": [f"u{i}@acme.example" for i in range(150)]}, [bulk("to", "lists 150 items")]),
    ("a limit of 5000 is bulk", {"limit": 5000}, [bulk("limit", "is a bulk count (5000)")]),
    ("a batch_size of 1000 is bulk", {"batch_size": 1000}, [bulk("batch_size", "is a bulk count (1000)")]),
    ("a negative limit is no limit", {"limit": -1}, [bulk("limit", "asks for no limit (-1)")]),
    ("all set is bulk", {"all": True}, [bulk("all", "asks for all")]),
    ("select_all set as text is bulk", {"select_all": "true"}, [bulk("select_all", "asks for all")]),
    ("a path wildcard is bulk", {"paths": ["logs/*"]}, [bulk("paths[0]", "is a wildcard")]),
    ("a bare star is bulk", {"pattern": "*"}, [bulk("pattern", "is a wildcard")]),
    ("a key prefix wildcard is bulk", {"keys": "user:*"}, [bulk("keys", "is a wildcard")]),
    ("a page of 100 is not bulk", {"limit": 100}, []),
    ("99 ids are not bulk", {"ids": list(range(99))}, []),
    ("an embedding is data, not bulk", {"embedding": [0.1] * 1536}, []),
    ("an image size is no count", {"size": 4096}, []),
    ("arithmetic is no wildcard", {"expression": "2*3"}, []),
    ("markdown emphasis is no wildcard", {"text": "**important**"}, []),
    ("a star in prose is no wildcard", {"q": "find * in docs"}, []),
    ("all unset is not bulk", {"all": False}, []),
    # ---- raises add up, each with its reason
    (
        "a bulk delete is raised twice",
        {"action": "delete", "ids": list(range(500))},
        [destructive("action", "delete"), bulk("ids", "lists 500 items")],
    ),
    (
        "a secret sent to production is RED with both reasons",
        {"env": "prod", "token": SECRET},
        [secret("token"), production("env")],
    ),
    ("a plain lookup is not raised", {"customer": "c-1", "fields": ["name", "email"]}, []),
]


@pytest.mark.parametrize(("args", "reasons"), [pytest.param(a, r, id=name) for name, a, r in TABLE])
def test_arguments_raise_the_risk_for_what_they_show_each_raise_with_its_reason(args: dict[str, Any], reasons: list[str]) -> None:
    assessed = risk.assess("GREEN", args)
    expected = "RED" if any("secret-like" in r for r in reasons) else risk.LEVELS[min(len(reasons), 2)]
    assert (assessed.level, list(assessed.reasons)) == (expected, reasons)


def test_raises_stop_at_red() -> None:
    assessed = risk.assess("YELLOW", {"env": "production", "action": "drop", "all": True})
    assert assessed.level == "RED" and len(assessed.reasons) == 3 and assessed.catalog_level == "YELLOW"


def test_a_production_impacting_tool_called_from_production_is_raised_once() -> None:
    flagged = risk.assess("GREEN", {}, production=True, production_impact=True)
    assert (flagged.level, flagged.reasons) == (
        "YELLOW",
        ("production-impacting tool called from a production environment: raised one level",),
    )
    named = risk.assess("GREEN", {"env": "prod"}, production=True, production_impact=True)
    assert (named.level, named.reasons) == ("YELLOW", (production("env"),))
    assert risk.assess("GREEN", {}, production=True).level == "GREEN"


def test_a_secret_anywhere_in_a_long_list_is_found_and_redacted() -> None:
    ids: list[Any] = [f"cus_{i:08d}" for i in range(5000)]
    ids[4000] = OPENAI
    assert risk.assess("GREEN", {"ids": ids}).reasons == (secret("ids[4000]"), bulk("ids", "lists 5000 items"))
    redacted = risk.redact({"ids": ids})["ids"]
    assert redacted[4000] == risk.REDACTED and redacted[:4000] == ids[:4000] and OPENAI not in redacted
    pins = {"passwords": list(range(200))}
    assert risk.assess("GREEN", pins).level == "RED" and risk.redact(pins) == {"passwords": [risk.REDACTED] * 200}


def test_what_assessment_does_not_read_it_calls_bulk() -> None:
    many = {f"field{i}": "x" for i in range(1500)}
    assert risk.assess("GREEN", many).reasons == ("arguments hold more than 1000 values, not all read: raised one level",)
    assert risk.redact(many) == many  # redaction reads everything, however large


def test_stored_text_loses_known_secrets_and_secret_like_text_but_keeps_the_rest() -> None:
    reason = f"not {GITHUB}@evil.com nor 123456; see postgresql://admin:hunter2@db/app?key=abc&page=2"
    assert risk.redact_text(reason, {"123456"}) == (
        "not [REDACTED]@evil.com nor [REDACTED]; see postgresql://admin:[REDACTED]@db/app?key=[REDACTED]&page=2"
    )
    assert risk.redact_text("within the envelope") == "within the envelope"
    assert risk.redact_text("password=hunter2;", {"hunter", "hunter2"}) == "password=[REDACTED];"  # longest first


def test_a_short_secret_value_does_not_blank_letters_out_of_stored_text() -> None:
    # {"password": "a"} or {"pin": 1}: taking every "a" or "1" out of a reason would let an agent
    # rewrite what append-only records say. The value itself is still redacted where it stood.
    reason = "risk RED is above the envelope's maxRisk YELLOW (1 of 1)"
    assert risk.redact_text(reason, {"a", "1", "12345"}) == reason
    assert risk.redact_args({"password": "a"}) == ({"password": risk.REDACTED}, frozenset({"a"}))


def test_a_secret_past_what_assessment_reads_one_by_one_still_makes_the_call_red() -> None:
    records: list[Any] = [{"n": i} for i in range(99)] + [{"password": "hunter2"}]
    assessed = risk.assess("GREEN", {"q": "x", "records": records})
    assert assessed.level == "RED"
    assert "an argument past those read one by one holds a secret-like value: RED" in assessed.reasons
    many: dict[str, Any] = {f"field{i}": "x" for i in range(1500)} | {"zz_token": SECRET}
    assert risk.assess("GREEN", many).level == "RED"


def test_redact_args_returns_what_it_took_out() -> None:
    redacted, taken = risk.redact_args({"password": 12345, "to": [f"{GITHUB}@evil.com"], "n": 1})
    assert redacted == {"password": risk.REDACTED, "to": [risk.REDACTED], "n": 1}
    assert taken == {"12345", f"{GITHUB}@evil.com"}


@pytest.mark.parametrize(
    "args",
    [
        {"password": SECRET},
        {"db.password": SECRET},
        {"password[0]": SECRET},
        {"password.old": SECRET},
        {"token.x": SECRET},
        {"x.token": SECRET},
        {"nested": {"a.api_key": SECRET}},
        {"passwords": [SECRET]},
        {"password": [SECRET, {"note": "x"}]},
        {"items": [{"secret": SECRET}]},
        {"p[0].token": SECRET},
        {"note": OPENAI},
        {"password": "short"},
        {"customer": SECRET},
        {"password": 12345},
        {"max_tokens": 4096},
        {"ids": [*range(300), OPENAI]},
        {"records": [*({"n": i} for i in range(99)), {"password": "hunter2"}]},
        {f"field{i}": "x" for i in range(1500)} | {"zz_token": SECRET},
    ]
    + [args for _, args, _ in TABLE],
)
def test_a_value_assessed_as_a_secret_is_exactly_one_that_is_redacted(args: dict[str, Any]) -> None:
    assessed = risk.assess("GREEN", args)
    flagged = any("secret-like" in reason for reason in assessed.reasons)
    redacted = risk.redact(args)
    assert flagged == (redacted != args), (assessed.reasons, redacted)
    if flagged:
        assert SECRET not in str(redacted) and "sk-abc" not in str(redacted)


def test_a_secret_under_an_indexed_key_is_redacted() -> None:
    # Assessing read "password[0]" as "password" (RED) while redacting did not: stored in the clear.
    assert risk.assess("GREEN", {"password[0]": SECRET}).level == "RED"
    assert risk.redact({"password[0]": SECRET, "n": 1}) == {"password[0]": risk.REDACTED, "n": 1}


# ---------------------------------------------------------------- long text


def _patterns() -> dict[str, Any]:
    return {name: value for name, value in vars(risk).items() if isinstance(value, risk._Pattern)}


def _matches(pattern: Any, text: str) -> tuple[Any, ...]:
    def seen(m: Any) -> Any:
        return None if m is None else (m.span(), m.groups())

    return (
        seen(pattern.search(text)),
        seen(pattern.match(text)),
        seen(pattern.fullmatch(text)),
        [seen(m) for m in pattern.finditer(text)],
        pattern.sub("|", text),
    )


# Text that reaches every branch of the patterns: keys and tokens, URLs with credentials, card
# numbers bare and grouped, production names, SQL, wildcards, camelCase, and the edges between.
_PIECES = [
    OPENAI, GITHUB, "rk_live_abcdefghijklmnop1234", "AKIAABCDEFGHIJKLMNOP", "AIza" + "x" * 35, "glpat-abcdefghijklmnopqrstu",
    "xoxb-1234567890-abc", "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "eyJhbGciOiJI.eyJzdWIiOiIx.c2lnbmF0dXJlMTIz",
    "Bearer abcdefghijklmnopqrstuvwx==", "https://user:pa55@db.prod.example", "postgres://u:p@h/db", "Password=hunter2;",
    "?api_key=abc&x=1", "&sig=zz#f", "4929123456781234", "4929 1234 5678 9012", "4929-1234-5678-901", "34343434343434343434",
    "prod", "non-prod", "pre.prod", "production", "prd", "live", "delete from users;", "DROP TABLE t", "truncate table x",
    "update t set a=1", "alter table t drop c", "users/*", "*.log", "2*3", "**bold**", "camelCaseWord", "HTTPServer",
    " ", "\n", "\t", "=", "&", "?", "://", "@", ":", "-", "_", ".", "/", "0", "9", "a", "Z", "\u00e9", "\u2028",
]  # fmt: skip


@pytest.mark.parametrize("seed", range(12))
def test_the_matcher_process_finds_what_this_process_finds(seed: int) -> None:
    # Long text is matched in a process of its own: every pattern must find there exactly what
    # `re` finds here (spans, groups, every match, substitutions).
    import random

    rng = random.Random(seed)
    pieces: list[str] = []
    while sum(map(len, pieces)) < risk._LONG:
        pieces.append(rng.choice(_PIECES))
    text = "".join(pieces)
    for name, pattern in _patterns().items():
        assert _matches(pattern, text) == _matches(pattern.short, text), name


def test_secrets_deep_in_long_text_are_found_and_redacted() -> None:
    filler = "y=" * 300_000  # every line of it looks like the start of a secret to the prefilter
    for hidden in (OPENAI, "4929 1234 5678 9012", "postgres://admin:s3cretpw@db/x"):
        text = filler + hidden + filler
        assert risk.assess("GREEN", {"note": text}).level == "RED", hidden
        redacted, taken = risk.redact_args({"note": text})
        assert redacted == {"note": risk.REDACTED} and taken == {text}
        assert hidden.split("@")[0].split(":")[-1] not in risk.redact_text(text)


def test_long_text_is_scanned_without_holding_other_threads() -> None:
    # A server answers other callers while one caller's long arguments are scanned: the scan must
    # let go of the GIL. A thread running alongside is stopped for a whole `re` search of the text
    # (one C call: the longest pause it sees is at least that long, however idle the host), and
    # for little at a time while the scan runs (best of three: a busy host can pause it too).
    import threading
    import time

    text = "y=" * 450_000

    def longest_pause(work: Any) -> float:
        stop = threading.Event()
        pause = [0.0]

        def run() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                now = time.perf_counter()
                pause[0] = max(pause[0], now - last)
                last = now

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.01)
        pause[0] = 0.0
        try:
            work()
        finally:
            stop.set()
            thread.join()
        return pause[0]

    risk.redact_args({"note": "warm the matcher process up: " + "x" * risk._LONG})
    held = longest_pause(lambda: risk._SECRET_VALUE.short.search(text))
    scanned = min(longest_pause(lambda: risk.redact_args({"note": text})) for _ in range(3))
    assert scanned < held / 3, (held, scanned)
    # Text dense with matches (54,000 card numbers): the answer is spans, not match objects.
    cards = "4111111111111111 " * 54_000
    redacted = min(longest_pause(lambda: risk.redact_text(cards)) for _ in range(3))
    assert redacted < held / 3, (held, redacted)
    assert risk.redact_text(cards) == f"{risk.REDACTED} " * 54_000


def test_the_matcher_process_imports_nothing_from_the_working_directory(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "pickle.py").write_text("open('IMPORTED', 'w').write('yes')\nfrom _pickle import *\n")
    (tmp_path / "types.py").write_text("open('IMPORTED', 'w').write('yes')\n")
    code = (
        "import os; from reconciler.policy import risk\n"
        f"os.chdir({str(tmp_path)!r})\n"
        "print(risk.assess('GREEN', {'note': 'y' * risk._LONG + ' sk-' + 'a' * 30}).level, risk._matcher is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.split() == ["RED", "True"]
    assert not (tmp_path / "IMPORTED").exists()


@pytest.mark.parametrize("child", [False, True], ids=["alone", "with a forked child that lives on"])
def test_the_matcher_process_ends_with_the_process_it_serves(child: bool) -> None:
    # Killed by SIGKILL (a CI timeout, the OOM killer): the matcher sees its stdin close and ends,
    # also while a forked child of the parent (a pool worker) lives on.
    import os
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import os, time\n"
        "from reconciler.policy import risk\n"
        "print(risk.assess('GREEN', {'note': 'y' * risk._LONG}).level, flush=True)\n"
        + ("if os.fork() == 0:\n    time.sleep(120); os._exit(0)\n" if child else "")
        + "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "GREEN"
        found = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True, check=False).stdout.split()
        matchers = [pid for pid in found if "risk._serve" in _cmdline(pid)]
        others = [pid for pid in found if pid not in matchers]
        assert matchers and bool(others) == child, found
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    try:
        deadline = time.monotonic() + 30
        while any(_cmdline(pid) for pid in matchers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_cmdline(pid) for pid in matchers)
    finally:
        for pid in others:
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def test_a_stopped_matcher_is_killed_and_the_text_matched_again() -> None:
    import os
    import signal

    text = "y" * risk._LONG + " sk-" + "a" * 30
    assert risk.assess("GREEN", {"note": text}).level == "RED"
    matcher = risk._matcher
    assert matcher is not None
    os.kill(matcher.process.pid, signal.SIGSTOP)
    try:
        # After the watchdog (risk._MATCHER_SECONDS), by a new matcher.
        assert risk.assess("GREEN", {"note": text}).level == "RED"
        assert matcher.process.wait(timeout=10) == -signal.SIGKILL
        assert risk._matcher is not None and risk._matcher is not matcher
    finally:
        if matcher.process.poll() is None:
            os.kill(matcher.process.pid, signal.SIGKILL)


@pytest.mark.parametrize(
    "args",
    [
        {OPENAI: "x"},
        {"outer": {OPENAI: "x"}},
        {"y" * 70_000 + OPENAI: "x"},
        {"note": "fine", "4929 1234 5678 9012": 1},
    ],
    ids=["key", "nested key", "long key", "card number as a key"],
)
def test_a_secret_as_a_key_raises_the_risk_like_a_secret_value(args: dict[str, Any]) -> None:
    assessed = risk.assess("GREEN", args)
    assert assessed.level == "RED"
    assert len(assessed.reasons) == 1 and "[REDACTED] holds a secret-like value" in assessed.reasons[0]
    assert OPENAI not in str(assessed.reasons) and "4929" not in str(assessed.reasons)


# Runs that make a pattern try long stretches again and again if it can: each starts a secret, a
# card, a URL, a production name, a statement or a wildcard, and then does not finish it.
_RUNS = [
    "eyJ", "eyJabc.", "sk-", "sk_live_", "ghp_", "github_pat_", "glpat-", "xoxb-", "AKIA", "AIza",
    "-----BEGIN ", "-----BEGIN RSA PRIVATE KEY-----", "Bearer ", "://a:", "://", "password=", "?token=", "&",
    "4111", "4111 ", "4111-", "prod", "non-prod", "delete from ", "; drop ", "update a set ", "alter table ", "*", "a*",
    "camelCase", "aB", "=", "y=",
]  # fmt: skip


@pytest.mark.parametrize("run", _RUNS)
def test_every_pattern_takes_time_in_proportion_to_the_text(run: str) -> None:
    # Eight times the text may take about eight times as long, not sixty-four (a search that
    # goes back over what it read): one argument must not hold a thread for seconds.
    import functools

    from tests.timing import fastest

    for name, pattern in _patterns().items():
        # _URL_HOST is only ever matched at the start of a value (risk._production); the rest are searched.
        use = pattern.short.match if name == "_URL_HOST" else (lambda text, p=pattern: list(p.short.finditer(text)))
        _, short = fastest(functools.partial(use, run * 500))
        _, long = fastest(functools.partial(use, run * 4000))
        assert long < 24 * short + 0.002, (name, run, short, long)
