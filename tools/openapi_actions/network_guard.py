"""The network guard: every connection an action opens goes to a checked, public address."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl

import httpcore
import httpx

class RefusedAddress(Exception):
    """A connection the guard will not open."""


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def forbidden_address(address: str) -> bool:
    """True unless `address` is a public unicast address (embedded IPv4 forms are checked too)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        for embedded in (ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None):
            if embedded is not None:
                candidates.append(embedded)
        if ip in _NAT64:
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return any(
        c.is_private
        or c.is_loopback
        or c.is_link_local
        or c.is_multicast
        or c.is_reserved
        or c.is_unspecified
        or not c.is_global
        for c in candidates
    )


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


async def checked_addresses(host: str, port: int, allowed_hosts: frozenset[str]) -> list[str]:
    """The addresses of `host`, all of them public unless the host is allow-listed."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise RefusedAddress(f"cannot resolve host '{host}': {getattr(exc, 'strerror', None) or exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise RefusedAddress(f"cannot resolve host '{host}'")
    if _normal_host(host) not in allowed_hosts:
        bad = [a for a in addresses if forbidden_address(a)]
        if bad:
            raise RefusedAddress(
                f"refused to connect to '{host}': it resolves to a private or otherwise non-public address ({bad[0]})"
            )
    return addresses


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, allowed_hosts: frozenset[str]):
        self.allowed_hosts = allowed_hosts
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        addresses = await checked_addresses(host, port, self.allowed_hosts)
        error: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):  # pragma: no cover
        raise RefusedAddress("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _Stream(httpx.AsyncByteStream):
    def __init__(self, stream):
        self.stream = stream

    async def __aiter__(self):
        async for part in self.stream:
            yield part

    async def aclose(self) -> None:
        if hasattr(self.stream, "aclose"):
            await self.stream.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose every connection is opened by `_GuardedBackend`."""

    def __init__(self, allowed_hosts: frozenset[str]):
        try:
            context = httpx.create_ssl_context()
        except AttributeError:  # pragma: no cover - older httpx
            context = ssl.create_default_context()
        self.pool = httpcore.AsyncConnectionPool(
            ssl_context=context, network_backend=_GuardedBackend(allowed_hosts), retries=0, max_connections=4
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        response = await self.pool.handle_async_request(core)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Stream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.pool.aclose()
