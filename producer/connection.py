"""Reach the cluster a command talks to, or say in one line why not.

redis-py and kombu retry a lost broker for a minute or more and then raise a long traceback;
that is right for a worker riding out a restart, wrong for a command a user is waiting on.
Every command that talks to a cluster first pings it here, with short timeouts and no
retries, and turns each failure into one sentence that names the URL with its password
masked.
"""

from __future__ import annotations

import socket
import ssl

import redis

from workers.errors import IbtError
from workers.settings import mask_url

# Seconds a command waits for the broker to answer before saying it is unreachable.
CONNECT_TIMEOUT = 3.0


class BrokerUnavailable(IbtError):
    """The cluster's Redis cannot be used: unreachable, refused, wrong password, TLS."""


def check_broker(url: str, *, timeout: float = CONNECT_TIMEOUT) -> None:
    """Ping ``url`` once; raise BrokerUnavailable with the reason in plain words."""
    client = redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=None
    )
    try:
        client.ping()
    except Exception as exc:  # classified below; anything else is reported, not raised raw
        reason = describe(exc)
        if url.startswith("rediss://") and reason.startswith("unreachable"):
            reason += " (is that port serving TLS?)"
        raise BrokerUnavailable(f"cannot use the broker {mask_url(url)}: {reason}") from None
    finally:
        client.close()


def describe(exc: BaseException) -> str:
    """What went wrong talking to Redis, in words a user can act on (never the password)."""
    if isinstance(exc, redis.exceptions.AuthenticationError):
        text = str(exc).lower()
        if "required" in text or "noauth" in text:
            return "the server requires a password (put it in the URL: redis://:PASSWORD@host)"
        return "wrong password (or user) in the URL"
    if isinstance(exc, redis.exceptions.ResponseError) and "noauth" in str(exc).lower():
        return "the server requires a password (put it in the URL: redis://:PASSWORD@host)"
    if isinstance(exc, redis.exceptions.InvalidResponse):
        return "the server there does not speak the Redis protocol (wrong port?)"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError | ssl.CertificateError):
            return f"TLS handshake failed ({getattr(cause, 'reason', None) or cause})"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (is the server running, on that port?)"
        if isinstance(cause, socket.gaierror):
            return "unknown host name"
        if isinstance(cause, TimeoutError | socket.timeout):
            return f"unreachable: no answer within {CONNECT_TIMEOUT:g} s"
        cause = cause.__cause__ or cause.__context__
    text = str(exc)
    lowered = text.lower()
    if "ssl" in lowered or "tls" in lowered or "certificate" in lowered:
        return f"TLS handshake failed ({text})"
    if "refused" in lowered:
        return "connection refused (is the server running, on that port?)"
    if "timeout" in lowered or "timed out" in lowered:
        return f"unreachable: no answer within {CONNECT_TIMEOUT:g} s"
    if "name or service not known" in lowered or "nodename" in lowered:
        return "unknown host name"
    if "connection closed by server" in lowered or "reset" in lowered:
        return "the server closed the connection (a TLS server reached with redis://?)"
    return f"{type(exc).__name__}: {text}"
