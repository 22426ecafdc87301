# ARM Reconciler: slim image, non-root, armctl as the entrypoint.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY reconciler ./reconciler
COPY policies ./policies
RUN pip install --no-cache-dir build && python -m build --wheel --outdir /dist

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 arm
COPY --from=build /dist/*.whl /tmp/
COPY --from=build /src/constraints.txt /tmp/
# The same pinned versions CI tests with.
RUN pip install --no-cache-dir -c /tmp/constraints.txt /tmp/*.whl && rm /tmp/*.whl /tmp/constraints.txt
USER arm
WORKDIR /home/arm
# Created as the image's user, so a named volume mounted here starts out writable by it.
RUN mkdir -p /home/arm/state
ENV ARM_STATE_DIR=/home/arm/state
VOLUME /home/arm/state
# armctl serve / armctl run listen here (examples/docker-compose publishes it).
EXPOSE 8080
ENTRYPOINT ["armctl"]
CMD ["--help"]
