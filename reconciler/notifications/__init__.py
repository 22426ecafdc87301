"""Notifications: what the fleet tells people and systems without being asked.

- ``events``: which change records are told, as which event, with which summary; which channels
  want an event. Pure.
- ``outbox``: one row per (event, channel), written in the transaction of the change record (or
  the failed reconcile run) it tells, so a committed change is never lost and a rolled-back one
  never sent; the list ``armctl notifications list`` and ``GET /v1/notifications`` show.
- ``delivering``: the worker that drains the outbox (the daemon's job, ``armctl notifications
  deliver``): HTTP POST of the body signed with HMAC-SHA256, retried with exponential backoff.

The room sits below ``audit``, whose chain writes every change record and calls ``outbox`` in the
same transaction, and above ``state`` and ``desired`` (the event names live in ``desired.kinds``,
next to the kinds that subscribe to them). It is the one seam for outbound webhooks.
"""
