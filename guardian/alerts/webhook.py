"""Alerts POSTed as JSON to a URL (a Slack or Telegram bridge), with a timeout and retries.

Connection failures and 5xx answers are retried after a short backoff (0.2 s, 0.4 s, ...); a 4xx
answer is the request's fault and is not. A server that accepts the request and then does not
answer within the timeout is not retried either: it may have acted on it, and waiting again would
stall the cycle further. After the last try the sink raises, and the Alerter reports a warning.

The URL may hold a token (in its userinfo, its path or its query, as Slack's and Telegram's do),
so an error names only its scheme, host and port. Credentials in the URL (``https://user:pw@host``)
are sent as HTTP basic auth.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from guardian.alerts import Alert

BACKOFF = 0.2  # seconds before the first retry, doubled for each next one


class WebhookError(RuntimeError):
    pass


class WebhookSink:
    name = "webhook"

    def __init__(
        self,
        url: str,
        timeout: float = 5.0,
        retries: int = 2,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("alerts.webhook: an http:// or https:// URL with a host is needed")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        host += f":{parts.port}" if parts.port else ""
        # urllib does not read credentials from the URL: send them as HTTP basic auth, as curl does.
        self._url = urllib.parse.urlunsplit(parts._replace(netloc=host))
        self._headers = {"Content-Type": "application/json", "User-Agent": "guardian"}
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self.timeout = timeout
        self.retries = max(0, retries)
        self._sleep = sleep
        self.safe_url = f"{parts.scheme}://{host}"  # what an error may show
        secrets = (
            url,
            self._url,
            parts.netloc if parts.username is not None else "",
            parts.password or "",
            parts.path,
            parts.query,
        )
        self._secrets = sorted({s for s in secrets if len(s) > 1}, key=len, reverse=True)

    def emit(self, alert: Alert) -> None:
        body = json.dumps(alert.to_json(), ensure_ascii=False, default=str).encode()
        tries = self.retries + 1
        for attempt in range(tries):
            if attempt:
                self._sleep(BACKOFF * 2 ** (attempt - 1))
            retry, why = self._post(body)
            if why is None:
                return
            if not retry or attempt == tries - 1:
                raise WebhookError(
                    f"webhook {self.safe_url} failed after {attempt + 1} {'try' if attempt == 0 else 'tries'}: {why}"
                )

    def _post(self, body: bytes) -> tuple[bool, str | None]:
        """One POST: (worth retrying, what went wrong or None)."""
        req = urllib.request.Request(  # noqa: S310 (the scheme is checked in __init__)
            self._url,
            data=body,
            headers=self._headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                resp.read()
        except urllib.error.HTTPError as e:
            e.close()
            return e.code >= 500, f"HTTP {e.code}"
        except urllib.error.URLError as e:  # could not connect (refused, DNS, connect timeout)
            return True, self._scrub(f"{type(e.reason).__name__}: {e.reason}")
        except TimeoutError:  # connected and sent, but no answer in time
            return False, f"no answer within {self.timeout:g}s"
        except (OSError, http.client.HTTPException) as e:  # the connection dropped mid-answer
            return True, self._scrub(f"{type(e).__name__}: {e}")
        return False, None

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
