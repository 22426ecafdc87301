#!/usr/bin/env python3
"""Record an evaluation harness's results as evidence for one agent version, with a ci token.

The step a CI pipeline runs after its harness (standard library only, so it can be copied into
any pipeline):

1. ``GET /v1/versions/{version}`` — the version's scorecard: its genome hash and every
   EvaluationSuite that applies to it;
2. for each of those suites the harness measured, ``POST /v1/evaluations`` ``{version, suite,
   metrics, samples, runUrl, genomeHash}``. Sending the genome hash the scorecard named binds the
   run to exactly that genome: if the fleet moved to another one meanwhile, the reconciler
   refuses the run (409) instead of crediting it to a genome nobody measured;
3. prints what each suite amounts to now, and exits 0 when every suite that applies is passing,
   1 when one is failing or missing (the build goes red; the run is recorded all the same) or
   anything was refused.

The harness's results file holds one entry per suite it ran (the shape most harnesses can be
made to print)::

    {"research-briefs": {"metrics": {"citation_accuracy": 0.93, "p95_latency_seconds": 31},
                         "samples": 80}}

Usage: ARM_URL=https://arm.example ARM_CI_TOKEN=arm_... python3 evaluate.py
       --version research-agent@0.1.0 --results results.json [--run-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class Arm:
    """The reconciler's HTTP API with a bearer token; every call returns ``(status, body)``
    (status 0: no HTTP answer at all)."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            return 0, {"message": f"no answer from {self.url}: {getattr(exc, 'reason', exc)}"}


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return {"message": raw[:200].decode("utf-8", "replace")}


def _message(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail") or body)
    return str(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("ARM_URL", "http://127.0.0.1:8080"), help="the reconciler (env ARM_URL)")
    parser.add_argument("--token", default=os.environ.get("ARM_CI_TOKEN"), help="a ci token (env ARM_CI_TOKEN)")
    parser.add_argument("--version", required=True, help="the AgentVersion the harness evaluated")
    parser.add_argument("--results", required=True, help="the harness's results: {suite: {metrics, samples}}")
    parser.add_argument("--run-url", default=None, help="where the pipeline's run can be read (kept with each run)")
    args = parser.parse_args(argv)
    if not args.token:
        print("no token: set ARM_CI_TOKEN (armctl token create --kind ci)", file=sys.stderr)
        return 1
    try:
        with open(args.results, encoding="utf-8") as f:
            results = json.load(f)
    except (OSError, ValueError) as exc:
        print(f"cannot read the harness's results {args.results}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(results, dict):
        print(f"{args.results}: a JSON object of suite -> {{metrics, samples}} is needed", file=sys.stderr)
        return 1
    arm = Arm(args.url, args.token)

    status, card = arm.call("GET", "/v1/versions/" + urllib.parse.quote(args.version, safe="@"))
    if status != 200:
        print(f"cannot read the scorecard of {args.version} (HTTP {status or 'error'}): {_message(card)}", file=sys.stderr)
        return 1
    genome = card["genomeHash"]
    applies = [e["suite"] for e in card["evidence"]]
    print(f"{args.version} ({genome}): suites {', '.join(applies) or 'none'}")
    for suite in sorted(set(results) - set(applies)):
        print(f"  {suite}: measured, but it does not apply to {args.version}; not submitted")

    ok = True
    for suite in applies:
        measured = results.get(suite)
        if measured is None:
            continue
        body = {
            "version": args.version,
            "suite": suite,
            "metrics": measured.get("metrics"),
            "samples": measured.get("samples"),
            "genomeHash": genome,
        }
        if args.run_url:
            body["runUrl"] = args.run_url
        status, answer = arm.call("POST", "/v1/evaluations", body)
        if status != 201:
            print(f"  {suite}: refused (HTTP {status or 'error'}): {_message(answer)}")
            ok = False
            continue
        run, evidence = answer["run"], answer["evidence"]
        print(f"  {suite}: recorded run {run['id']}: {evidence['status']}: {evidence['summary']}")
        for held in answer["restricted"]:
            print(f"    continuous evaluation held {held['instance']}: {held['before']} -> {held['after']}")

    status, card = arm.call("GET", "/v1/versions/" + urllib.parse.quote(args.version, safe="@"))
    if status != 200:
        print(f"cannot read the scorecard of {args.version} again (HTTP {status or 'error'}): {_message(card)}", file=sys.stderr)
        return 1
    for entry in card["evidence"]:
        if entry["status"] != "passing":
            print(f"not passing: {entry['summary']}")
            ok = False
    print("every suite passes" if ok else "the evidence does not pass (recorded all the same)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
