"""The one Prometheus query the orchestrator makes: does a workflow's verification query hold."""

import logging

import aiohttp

from kubernaut.domain.effectiveness import MetricCheck

log = logging.getLogger(__name__)

QUERY_TIMEOUT = aiohttp.ClientTimeout(total=5)


async def check_query(base_url: str, query: str) -> MetricCheck:
    """HOLDS for a non-empty result, FAILS for an empty one; UNREACHABLE for no answer (no URL, a
    connection error, a non-success answer): the assessment is then Inconclusive, never blocking."""
    if not base_url:
        return MetricCheck.UNREACHABLE
    url = base_url.rstrip("/") + "/api/v1/query"
    try:
        async with (
            aiohttp.ClientSession(timeout=QUERY_TIMEOUT) as session,
            session.post(url, data={"query": query}) as response,
        ):
            body = await response.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        log.warning("Prometheus at %s did not answer the verification query: %s", base_url, exc)
        return MetricCheck.UNREACHABLE
    if not isinstance(body, dict) or body.get("status") != "success":
        log.warning("Prometheus at %s refused the verification query %r: %s", base_url, query, body)
        return MetricCheck.UNREACHABLE
    result = (body.get("data") or {}).get("result")
    if isinstance(result, list):
        return MetricCheck.HOLDS if result else MetricCheck.FAILS
    # a scalar or string result is a value, not a set of series: it holds
    return MetricCheck.HOLDS if result else MetricCheck.FAILS
