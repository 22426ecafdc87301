"""Reconcile: validate a commit, plan it against the store, apply the plan in one transaction."""
