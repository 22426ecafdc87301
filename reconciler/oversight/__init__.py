"""Oversight: what people do to the fleet, outside Git.

``approving`` (what gates and tool calls wait for; operators approve or deny), ``holds``
(emergency controls on instances and the tenant kill switch) and ``access`` (API tokens, and
every lookup of an operator's roles and permissions). Used by the reconcile, the decision
service, the server and the CLI alike, so each of them authorises and records an operator's act
the same way.
"""
