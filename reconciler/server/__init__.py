"""Server: the HTTP API (FastAPI on uvicorn) that runtimes and operators call."""
