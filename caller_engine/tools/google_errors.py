"""The error every Google API failure becomes. Its own module so that the tools and their
callers can name it without importing the Google client library (about 30 MB), which is
loaded only when calendar or email tools are enabled."""

from __future__ import annotations


class GoogleApiError(Exception):
    """A failed Google request.

    `status` is the HTTP status (None when no answer came back); `reason` is Google's error
    reason (`notFound`, `duplicate`, `rateLimitExceeded`, ...), the OAuth error code
    (`invalid_grant`, ...), or `timeout` / `unreachable` for transport failures.
    """

    def __init__(self, status: int | None, reason: str, message: str) -> None:
        super().__init__(f"{status or '-'} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        return (
            self.status is None
            or self.status == 429
            or self.status >= 500
            or self.reason in ("rateLimitExceeded", "userRateLimitExceeded")
        )
