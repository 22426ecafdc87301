"""``examples/opa-sidecar``: the OPA configuration, used exactly as OPA would use it, against a
real ``armctl serve`` over the sample fleet; and through a real ``opa`` when one is on PATH."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from reconciler.policy import engines, goopa
from reconciler.state import tables
from tests.evidence.opaverify import BundleRefused, read_bundle, verify_bundle
from tests.examples.conftest import EXAMPLES, Served, free_port, http_status, stop
from tests.realopa import require

SIDECAR = EXAMPLES / "opa-sidecar"
CONFIG = SIDECAR / "opa-config.yaml"
INPUT = SIDECAR / "input.json"

#: What the example input (a refund of 120 EUR by the billing agent in dev) is answered, as the README says.
EXPECTED = {
    "decision": "NEEDS_APPROVAL",
    "reasons": [
        "refunds above 100 are reviewed by the billing desk",
        "risk RED is above the envelope's approvalAbove YELLOW",
        "tool payments.refund requires approval",
    ],
}


def opa_config(environ: Mapping[str, str]) -> dict[str, Any]:
    """The configuration as ``opa run`` loads it: ``${VAR}`` replaced by the variable (empty if unset)."""
    text = re.sub(r"\$\{([^}]+)\}", lambda m: environ.get(m.group(1), ""), CONFIG.read_text())
    config: dict[str, Any] = yaml.safe_load(text)
    return config


def service_request(config: dict[str, Any], service: str, resource: str, **kwargs: Any) -> urllib.request.Request:
    """A request to ``resource`` of a configured service, joined and authorised as OPA's REST client
    does (URL without trailing slash + "/" + resource without surrounding slashes; bearer scheme)."""
    settings = config["services"][service]
    request = urllib.request.Request(settings["url"].rstrip("/") + "/" + resource.strip("/"), **kwargs)
    bearer = settings["credentials"]["bearer"]
    request.add_header("Authorization", f"{bearer.get('scheme', 'Bearer')} {bearer['token']}")
    return request


def fetch(request: urllib.request.Request) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def sidecar_env(served: Served) -> dict[str, str]:
    """The environment the README sets: the URL, the token, the tenant and the bundle key (the
    ``spki`` of the current key ``GET /v1/keys`` lists)."""
    request = urllib.request.Request(f"{served.url}/v1/keys", headers={"Authorization": f"Bearer {served.token}"})
    status, _, body = fetch(request)
    assert status == 200, body
    (current,) = [k for k in json.loads(body)["keys"] if k["current"]]
    return {"ARM_URL": served.url, "ARM_TOKEN": served.token, "ARM_TENANT": "acme", "ARM_BUNDLE_KEY": current["spki"]}


def test_the_sidecar_pulls_the_applied_commits_bundle_with_its_bearer_token(served: Served) -> None:
    config = opa_config(sidecar_env(served))
    bundle = config["bundles"]["arm"]
    assert bundle["resource"] == "/v1/bundles/arm.tar.gz"
    assert 0 < bundle["polling"]["min_delay_seconds"] <= bundle["polling"]["max_delay_seconds"]

    status, headers, body = fetch(service_request(config, bundle["service"], bundle["resource"]))
    assert status == 200 and headers["content-type"] == "application/gzip"
    assert body[:2] == b"\x1f\x8b"
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile(".manifest"))  # type: ignore[arg-type]
        data = json.load(tar.extractfile("data.json"))  # type: ignore[arg-type]
    assert manifest == {"revision": served.fleet.sha, "roots": ["arm"]}
    assert {"policies/arm/decision.rego", "policies/arm/gates.rego", "fleet/policies/acme.rego"} <= names

    # The example input carries what the bundle's data says about that version and tool.
    example = json.loads(INPUT.read_text())["input"]
    fleet_data = data["arm"]["fleet"]
    assert example["envelope"] == fleet_data["envelopes"]["acme"][example["instance"]["version"]]
    tool = fleet_data["tools"]["acme"][example["tool"]["name"]]
    assert {k: tool[k] for k in ("risk", "writes", "external", "productionImpact")} == {
        k: example["tool"][k] for k in ("risk", "writes", "external", "productionImpact")
    }

    # A sidecar polling again gets 304 until another commit is applied; with a token not issued, 401.
    again = service_request(config, bundle["service"], bundle["resource"], headers={"If-None-Match": headers["etag"]})
    assert fetch(again)[0] == 304
    stranger = opa_config({"ARM_URL": served.url, "ARM_TOKEN": "arm_never-issued"})
    assert fetch(service_request(stranger, bundle["service"], bundle["resource"]))[0] == 401


def test_the_sidecar_activates_only_a_bundle_whose_signature_verifies_with_its_configured_key(served: Served) -> None:
    config = opa_config(sidecar_env(served))
    bundle = config["bundles"]["arm"]
    status, _, body = fetch(service_request(config, bundle["service"], bundle["resource"]))
    assert status == 200
    signing = bundle["signing"]
    assert config["keys"][signing["keyid"]]["key"].startswith("-----BEGIN PUBLIC KEY-----\n")
    payload = verify_bundle(body, config["keys"], keyid=signing["keyid"], scope=signing["scope"])
    assert {".manifest", "data.json", "fleet/policies/acme.rego"} <= {f["name"] for f in payload["files"]}
    # What a sidecar must refuse: a changed data.json, a bundle signed for another tenant.
    files = read_bundle(body)
    data = json.loads(files["data.json"])
    data["arm"]["fleet"]["tools"]["acme"]["payments.refund"]["risk"] = "GREEN"
    files["data.json"] = json.dumps(data).encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    with pytest.raises(BundleRefused, match=r"data\.json: digest mismatch"):
        verify_bundle(gzip.compress(raw.getvalue()), config["keys"], keyid=signing["keyid"], scope=signing["scope"])
    with pytest.raises(BundleRefused, match="scope mismatch"):
        verify_bundle(body, config["keys"], keyid=signing["keyid"], scope="globex")


def test_a_sidecar_started_without_its_token_is_refused_with_401(served: Served) -> None:
    config = opa_config({"ARM_URL": served.url})  # ARM_TOKEN unset: OPA sends "Authorization: Bearer "
    bundle = config["bundles"]["arm"]
    assert fetch(service_request(config, bundle["service"], bundle["resource"]))[0] == 401


def test_decision_logs_upload_to_the_path_the_configuration_names(served: Served) -> None:
    config = opa_config(sidecar_env(served))
    logs = config["decision_logs"]
    example = json.loads(INPUT.read_text())["input"]
    entries = [
        {
            "labels": {"app": config["labels"]["app"], "id": "7f1c", "version": "1.4.2"},
            "decision_id": "4ca636c1-55e4-417a-b1d8-4aceb67960d1",
            "bundles": {"arm": {"revision": served.fleet.sha}},
            "path": "arm/decision/result",
            "input": {**example, "args": {**example["args"], "password": "hunter2-hunter2"}},
            "result": EXPECTED,
            "requested_by": "127.0.0.1:50412",
            "timestamp": "2026-11-22T12:00:00.000000Z",
        }
    ]
    upload = service_request(
        config,
        logs["service"],
        logs.get("resource", "/logs"),
        data=gzip.compress(json.dumps(entries).encode()),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        method="POST",
    )
    status, _, body = fetch(upload)
    assert (status, body) == (204, b"")

    e = tables.op_events.c
    (stored,) = served.fleet.query(sa.select(e.tenant, e.payload).where(e.type == "OPA_DECISION"))
    assert stored.tenant == "acme"
    assert stored.payload["decision_id"] == entries[0]["decision_id"]
    assert stored.payload["bundles"]["arm"]["revision"] == served.fleet.sha
    assert stored.payload["input"]["args"]["password"] == "[REDACTED]"
    assert stored.payload["input"]["args"]["amount"] == 120


def test_the_example_input_is_decided_as_the_readme_says(served: Served) -> None:
    # The reconciler answers OPA's Data API on the same policy the bundle carries.
    config = opa_config(sidecar_env(served))
    request = service_request(
        config, "arm", "/v1/data/arm/decision/result", data=INPUT.read_bytes(), headers={"Content-Type": "application/json"}
    )
    status, _, body = fetch(request)
    assert status == 200 and json.loads(body) == {"result": EXPECTED}
    readme = (SIDECAR / "README.md").read_text()
    assert "opa run --server --config-file opa-config.yaml" in readme
    assert "curl" in readme and "/v1/data/arm/decision/result" in readme and "@input.json" in readme
    assert json.dumps(EXPECTED["reasons"][0]) in readme


def test_opas_own_engine_loaded_with_the_pulled_bundle_decides_the_example_as_the_readme_says(served: Served) -> None:
    # What a sidecar evaluates: OPA v1.20's Go engine, in process, with the bundle's files.
    require()
    config = opa_config(sidecar_env(served))
    bundle = config["bundles"]["arm"]
    status, _, body = fetch(service_request(config, bundle["service"], bundle["resource"]))
    assert status == 200
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        files = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}  # type: ignore[union-attr]
    sidecar = goopa.GoOpaEngine()
    modules = {name: text for name, text in files.items() if name.endswith(".rego")}
    sidecar.load(engines.Bundle(modules, json.loads(files["data.json"]), json.loads(files[".manifest"])["revision"]))
    example = json.loads(INPUT.read_text())["input"]
    assert sidecar.evaluate("data.arm.decision.result", example) == EXPECTED
    # Asked with no input, or with the amounts in currency units rather than micro-units, it fails closed.
    assert sidecar.query(["arm", "decision", "result"], None)["result"]["decision"] == "DENY"
    in_units = {**example, "cost": {"estimate": 0.05, "run": 0.02, "day": 0.02}}
    assert sidecar.evaluate("data.arm.decision.result", in_units)["decision"] == "DENY"


def test_a_version_whose_genome_fails_verification_is_denied_by_the_sidecar_too(served: Served) -> None:
    """Someone rewrites the stored genome of the example's version; ``armctl audit verify`` finds
    it. A sidecar polling with the ETag it has gets a new signed bundle (not 304) whose data names
    the version, and OPA's own engine loaded with it denies the example, as the Data API does."""
    require()
    config = opa_config(sidecar_env(served))
    bundle = config["bundles"]["arm"]
    status, headers, _ = fetch(service_request(config, bundle["service"], bundle["resource"]))
    assert status == 200
    example = json.loads(INPUT.read_text())["input"]
    version = example["instance"]["version"]
    engine = sa.create_engine(served.fleet.database)
    try:
        v = tables.agent_versions
        with engine.begin() as connection:
            genome = connection.execute(sa.select(v.c.genome).where(v.c.name == version)).scalar_one()
            connection.execute(v.update().where(v.c.name == version).values(genome={**genome, "memory": {"kind": "persistent"}}))
    finally:
        engine.dispose()
    assert served.fleet.armctl("audit", "verify", check=False).returncode == 1

    polled = service_request(config, bundle["service"], bundle["resource"], headers={"If-None-Match": headers["etag"]})
    status, _, body = fetch(polled)
    assert status == 200
    signing = bundle["signing"]
    verify_bundle(body, config["keys"], keyid=signing["keyid"], scope=signing["scope"])
    files = {name: content.decode() for name, content in read_bundle(body).items()}
    assert json.loads(files["data.json"])["arm"]["fleet"]["integrityFailed"] == {"acme": {version: True}}
    sidecar = goopa.GoOpaEngine()
    modules = {name: text for name, text in files.items() if name.endswith(".rego")}
    sidecar.load(engines.Bundle(modules, json.loads(files["data.json"]), json.loads(files[".manifest"])["revision"]))
    denied = sidecar.evaluate("data.arm.decision.result", example)
    assert denied["decision"] == "DENY" and denied["reasons"][0].startswith(
        f"VERSION_INTEGRITY_FAILED: the stored genome of version {version}"
    )
    request = service_request(
        config, "arm", "/v1/data/arm/decision/result", data=INPUT.read_bytes(), headers={"Content-Type": "application/json"}
    )
    status, _, answer = fetch(request)
    assert status == 200 and json.loads(answer)["result"] == denied


@pytest.mark.skipif(shutil.which("opa") is None, reason="no opa binary on PATH (none can be installed here)")
def test_a_real_opa_sidecar_decides_with_the_bundle_and_uploads_its_decision_log(served: Served, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "opa.log"
    with log.open("wb") as out:
        opa = subprocess.Popen(
            [str(shutil.which("opa")), "run", "--server", "--addr", f"127.0.0.1:{port}", "--config-file", str(CONFIG)],
            env={**os.environ, **sidecar_env(served)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while http_status(f"http://127.0.0.1:{port}/health?bundles") != 200:
            assert opa.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/data/arm/decision/result",
            data=INPUT.read_bytes(),
            headers={"Content-Type": "application/json"},
        )
        status, _, body = fetch(request)
        answer = json.loads(body)
        assert status == 200 and answer["result"] == EXPECTED, answer
        e = tables.op_events.c
        deadline = time.monotonic() + 60  # reporting.max_delay_seconds is 10
        while not (stored := served.fleet.query(sa.select(e.payload).where(e.type == "OPA_DECISION"))):
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.5)
        (entry,) = stored
        assert entry.payload["decision_id"] == answer["decision_id"]
        assert entry.payload["bundles"]["arm"]["revision"] == served.fleet.sha
        assert entry.payload["result"] == EXPECTED
    finally:
        stop(opa)
