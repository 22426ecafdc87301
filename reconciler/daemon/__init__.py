"""The daemon (``armctl run``): scheduled Git polls and reconciles, leadership, webhooks.

``scheduling`` runs the jobs, ``leading`` decides which replica applies, ``hooks`` checks Git
push webhooks. The HTTP API itself lives in ``server``; the CLI wires the two together.
"""
