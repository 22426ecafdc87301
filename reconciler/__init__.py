"""ARM Reconciler: the GitOps control plane for fleets of AI agents.

Layers import downward only (checked by import-linter, see ``pyproject.toml``)::

    cli → daemon / server → reconcile → policy, audit, lifecycle → spec, state → errors, settings, clock
"""

__version__ = "0.1.0"
