"""Keep credentials out of logs, exceptions, audit rows and CLI output."""

from __future__ import annotations

import re

# scheme://user:password@host  ->  scheme://user:***@host ; also catches redis://:password@host.
# The password runs to the LAST "@" before the host, so an unescaped "@" in it is masked too.
_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:@/\s;]*):(?P<pw>[^\s/]*)@"
)
_QUERY_PASSWORD = re.compile(r"(?i)(?P<key>[?&;](?:password|passwd|pwd)=)(?P<pw>[^&\s;]*)")


def mask_url(text: str) -> str:
    """Return ``text`` with the password of every URL in it replaced by ``***``.

    Works on single URLs, ``;``-separated URL lists and free text (exception messages) alike.
    """
    masked = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['key']}***", masked)


def describe_error(exc: BaseException) -> str:
    """A one-line, credential-free description of an exception for logs and audit rows."""
    detail = mask_url(str(exc)).strip() or "no detail"
    return f"{type(exc).__name__}: {detail}"
