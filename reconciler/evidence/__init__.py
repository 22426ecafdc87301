"""Evidence an auditor can check without trusting the database: what the record shows, signed.

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

The room sits below ``reconcile`` and ``decisions`` (which sign what they write and serve) and
above ``oversight``; it reads the chain through ``audit``.
"""
