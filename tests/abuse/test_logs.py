"""``POST /logs`` (OPA decision-log uploads) cannot freeze the server or flood the store.

Reproduces issue 15's items 1 and 9: a million empty entries (2,948 bytes gzipped) were parsed,
redacted and inserted on the event loop — 41 s during which every tenant's decisions waited —
and 5.2 million wrote 5.2 million rows; a truncated gzip and one with trailing garbage were
taken. Now an upload holds at most ``MAX_LOG_ENTRIES`` entries and ``MAX_LOG_BYTES`` inflated,
its structure is counted before it is parsed, the work runs in a worker thread, and the gzip
must be one whole stream.
"""

from __future__ import annotations

import gzip

import httpx
import sqlalchemy as sa

from reconciler.server import opa
from reconciler.state import tables
from tests.server.serving import auth

Api = tuple[httpx.Client, sa.Engine, dict[str, str]]

GZIP = {"Content-Encoding": "gzip"}


def _logs(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(
            sa.select(sa.func.count()).select_from(tables.op_events).where(tables.op_events.c.type == "OPA_DECISION")
        ).scalar_one()


def test_oversized_uploads_are_refused_whole_and_a_full_one_is_kept(api: Api) -> None:
    client, engine, made = api
    headers = {**auth(made["runtime"]), **GZIP}
    million = gzip.compress(b"[" + b"{}," * 999_999 + b"{}]")  # issue 15's reproduction: ~3 KB gzipped
    refused = client.post("/logs", content=million, headers=headers)
    assert refused.status_code == 422 and "arrays and objects" in refused.json()["message"]
    many = gzip.compress(b"[" + b'{"a":1},' * opa.MAX_LOG_ENTRIES + b"{}]")  # one entry too many
    refused = client.post("/logs", content=many, headers=headers)
    assert refused.status_code == 422 and f"at most {opa.MAX_LOG_ENTRIES}" in refused.json()["message"]
    bomb = gzip.compress(b'["' + b"x" * (opa.MAX_LOG_BYTES + 1) + b'"]')  # inflates past the limit
    refused = client.post("/logs", content=bomb, headers=headers)
    assert refused.status_code == 422 and "inflate above" in refused.json()["message"]
    assert _logs(engine) == 0
    full = gzip.compress(b"[" + b'{"decision_id":"d","result":true},' * (opa.MAX_LOG_ENTRIES - 1) + b"{}]")
    kept = client.post("/logs", content=full, headers=headers)
    assert kept.status_code == 204 and kept.headers["x-arm-stored"] == str(opa.MAX_LOG_ENTRIES)
    assert _logs(engine) == opa.MAX_LOG_ENTRIES
    # Decisions were answered all along, and still are.
    ask = {"instance": "acme:app-dev-g1-0", "tool": "crm.lookup"}
    assert client.post("/v1/decisions", json=ask, headers=auth(made["runtime"])).json()["decision"] == "ALLOW"


def test_a_truncated_gzip_and_trailing_garbage_are_refused(api: Api) -> None:
    client, engine, made = api
    headers = {**auth(made["runtime"]), **GZIP}
    whole = gzip.compress(b'[{"decision_id": "a"}, {"decision_id": "b"}]')
    for broken, says in ((whole[:-6], "truncated"), (whole + b"garbage", "follow the stream")):
        refused = client.post("/logs", content=broken, headers=headers)
        assert refused.status_code == 422 and says in refused.json()["message"], refused.text
    assert _logs(engine) == 0
    assert client.post("/logs", content=whole, headers=headers).status_code == 204
    assert _logs(engine) == 2
