"""Decisions: the runtime decision service, the product's hot path.

``deciding`` (the :class:`~reconciler.decisions.deciding.Decider`: resolve the caller, ask the
policy, record the answer before giving it), ``recording`` (the decision writer: group commit,
nothing answered before it is stored), ``ledger`` (what each instance spent and repeated, in
memory), ``events`` (heartbeats, cost ticks, tool results from runtimes) and ``bundling`` (the
applied commit's policy as engines and OPA sidecars load it). Independent of ``reconcile``: the
two meet only in the database and in the policy revision the reconcile applied.
"""
