"""Evidence: what a version has shown, recorded against its genome hash, and what it amounts to.

``judging`` (a version's evaluation runs against an EvaluationSuite: missing, passing or failing,
with the numbers; pure), ``recording`` (a run submitted by a CI token or an operator: bound to the
version's genome hash, append-only, in the change-record chain, and continuous evaluation's
restriction of a deployed version that fails) and ``scorecards`` (each version's lifecycle,
lineage, evidence, approvals and deployments, for approvers). The reconcile reads runs for its
gates; the server and the CLI submit and read them. Below them, above ``oversight``: a failing
run restricts instances through the same emergency controls an operator pulls.
"""
