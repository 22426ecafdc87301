"""The abuse room serves the API as tests/server does: the same fleet, tokens and transports."""

from tests.server.conftest import api, transport

__all__ = ["api", "transport"]
