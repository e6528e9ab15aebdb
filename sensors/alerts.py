"""One alert path for budget and compliance sensors: the run log, a webhook, and an alert asset.

A notifier (Slack, PagerDuty, email) hangs on whichever the deployment prefers: a webhook
URL (``AI_ORCH_ALERT_WEBHOOK_URL``, read with ``EnvVar``) receives each alert as JSON, and
each alert is also a materialization of an alert asset that asset sensors can watch.
"""

import httpx


def post_alert(url: str, payload: dict, log) -> None:
    try:
        httpx.post(url, json=payload, timeout=5.0).raise_for_status()
    except httpx.HTTPError as exc:  # a broken notifier must not stop enforcement
        log.warning(f"alert webhook failed: {exc}")
