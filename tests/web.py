"""HTTP from the tests: httpx's calls and clients over one shared TLS context.

httpx builds a TLS context for every client it makes, even one that only ever speaks
plain HTTP to 127.0.0.1, and ``httpx.get`` makes a client per call: loading the CA
bundle costs ~45 ms of CPU each time, and the fast tier made ~1 900 of them, a quarter
of its CPU. These build the same default context once.
"""

from __future__ import annotations

from typing import Any

import httpx

TLS = httpx.create_ssl_context()


def client(**options: Any) -> httpx.Client:
    """``httpx.Client(...)`` with the shared context."""
    return httpx.Client(verify=TLS, **options)


def request(method: str, url: str, *, timeout: Any = 5.0, **options: Any) -> httpx.Response:
    """``httpx.request(...)``: one client, one request, closed after."""
    with client(timeout=timeout) as session:
        return session.request(method, url, **options)


def get(url: str, **options: Any) -> httpx.Response:
    return request("GET", url, **options)


def post(url: str, **options: Any) -> httpx.Response:
    return request("POST", url, **options)


def put(url: str, **options: Any) -> httpx.Response:
    return request("PUT", url, **options)


def delete(url: str, **options: Any) -> httpx.Response:
    return request("DELETE", url, **options)
