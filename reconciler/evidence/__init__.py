"""Evidence: what a version has shown, and what an auditor can check without trusting the database.

Evaluation evidence, recorded against the genome hash:

- ``judging``: a version's evaluation runs against an EvaluationSuite: missing, passing or
  failing, with the numbers; pure.
- ``recording``: a run submitted by a CI token or an operator: bound to the version's genome
  hash, append-only, in the change-record chain; continuous evaluation's restriction of a
  deployed version that fails.
- ``scorecards``: each version's lifecycle, lineage, evidence, approvals and deployments, for
  approvers.
- ``cards``: a version as a signed A2A agent card with the ARM facts, and its offline check.
- ``lineage``: a version's lineage sheet: ancestry, genome changes, steps, approvals, deployments.

Evidence for auditors, signed:

- ``keys``: the Ed25519 signing keys (managed in the state directory, or brought in through
  ``ARM_SIGNING_KEY_FILE``), their public halves registered in the store and published.
- ``checkpoints``: signed checkpoints of each tenant's change-record chain (sequence, head hash,
  time, the previous checkpoint's hash, the op-event archives made since), written at every apply
  and periodically by the daemon; their verification catches a cut-off tail, a rewritten chain
  and a missing checkpoint.
- ``retention``: decision archives past the database retention, kept for the archive retention
  and pruned only after it; what is kept where.
- ``packing`` / ``unpacking``: the audit pack, a signed tar of one tenant's evidence, and its
  offline verification with nothing but the pack and a public key.
- ``opasigning``: OPA's bundle-signing format (``.signatures.json``), for the decision bundle.

The room sits below ``reconcile`` and ``decisions`` (the reconcile reads runs for its gates and
signs checkpoints at apply; the decider signs bundles) and above ``oversight``: a failing run
restricts instances through the same emergency controls an operator pulls. It reads the chain
through ``audit``.
"""
