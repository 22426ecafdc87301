"""Lifecycles: the three state machines (versions, instances, deployments). Pure; no I/O."""
