"""/metrics through a real server: paths no route serves share one series."""

from __future__ import annotations

import httpx
import sqlalchemy as sa


def test_requests_to_paths_no_route_serves_count_as_other_not_a_series_each(
    api: tuple[httpx.Client, sa.Engine, dict[str, str]],
) -> None:
    client, _, made = api
    for n in range(3):
        assert client.get(f"/scan-{n}").status_code == 404
        assert client.get(f"/v1/scan-{n}", headers={"Authorization": f"Bearer {made['runtime']}"}).status_code == 404
    client.get("/healthz")
    text = client.get("/metrics").text
    assert 'arm_http_requests_total{route="other",status="404"} 6' in text
    assert "scan-" not in text
    assert 'arm_http_requests_total{route="/healthz",status="200"} 1' in text
