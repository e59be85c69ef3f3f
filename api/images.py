"""Image URLs in chat requests → raw bytes for the engine (which validates and decodes them).

``data:image/…;base64,…`` is always accepted. ``https://`` is fetched only when the server
was started with ``--allow-remote-images``, within a size and a time limit, and never from a
private, loopback, link-local or otherwise non-public address: each hop's host name is
resolved, *every* resolved address is checked, and the connection goes to the checked address
(so DNS cannot answer differently a moment later). Redirects are followed by hand, each hop
checked the same way.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urljoin, urlsplit

import anyio
import httpx

from api.errors import ApiError

MAX_REDIRECTS = 3
INLINE_DECODE_LIMIT = 256 * 1024
Resolver = Callable[[str, int], Awaitable[list[str]]]


# What each kind of part may carry: accepted media types (prefixes) and an example data URL.
KINDS = {
    "image": (("image/",), "data:image/png;base64,..."),
    "video": (("video/", "application/octet-stream"), "data:video/mp4;base64,..."),
    "document": (
        ("application/pdf", "text/", "application/octet-stream"),
        "data:application/pdf;base64,...",
    ),
}


def decode_data_url(url: str, max_bytes: int, param: str, kind: str = "image") -> bytes:
    header, sep, payload = url.partition(",")
    media_type = header[len("data:") :].split(";")[0].strip().lower()
    accepted, example = KINDS[kind]
    if not sep or ";base64" not in header.lower():
        raise ApiError(
            400,
            f"{param}: a data URL must be base64-encoded ({example})",
            param=param,
            code=f"invalid_{kind}_url",
        )
    if media_type and not media_type.startswith(accepted):
        raise ApiError(
            400,
            f"{param}: expected {'an' if kind[0] in 'aeiou' else 'a'} {kind} data URL, got '{media_type}'",
            param=param,
            code=f"invalid_{kind}_url",
        )
    if len(payload) * 3 // 4 > max_bytes + 3:  # refuse before decoding
        raise ApiError(
            400,
            f"{param}: the {kind} is larger than {max_bytes // 2**20} MB",
            param=param,
            code=f"{kind}_too_large",
        )
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            400, f"{param}: the data URL is not valid base64", param=param, code=f"invalid_{kind}_url"
        ) from None


# IPv6 forms that stand for an IPv4 address (the last 32 bits): judged by that address.
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # ::127.0.0.1, deprecated (RFC 4291)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known NAT64 prefix (RFC 6052)
# Refused outright: local-use NAT64 (RFC 8215; the IPv4 address may sit anywhere in it) and
# Teredo (a tunnel to whatever its server and client fields say).
_REFUSED = (ipaddress.IPv6Network("64:ff9b:1::/48"), ipaddress.IPv6Network("2001::/32"))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped (::ffff:a.b.c.d),
    IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d), 6to4 (2002:AABB:CCDD::)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _IPV4_COMPATIBLE or ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in network for network in _REFUSED):
            return False
        inner = embedded_ipv4(ip)
        if inner is not None:  # ::ffff:127.0.0.1, ::7f00:1, 64:ff9b::7f00:1, 2002:7f00:1:: are loopback
            return is_public(str(inner))
        # Public IPv6 unicast is 2000::/3; Python counts much of the reserved rest as global.
        return ip.is_global and not ip.is_multicast and not ip.is_reserved
    return ip.is_global and not ip.is_multicast


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class ImageFetcher:
    """Fetches https image URLs for one server; ``transport``/``resolve`` are for tests."""

    def __init__(
        self,
        *,
        allow_remote: bool,
        max_bytes: int,
        timeout_s: float,
        resolve: Resolver = system_resolve,
        transport: httpx.AsyncBaseTransport | None = None,
        max_video_bytes: int | None = None,
        max_document_bytes: int | None = None,
    ):
        self.allow_remote, self.max_bytes, self.timeout_s = allow_remote, max_bytes, timeout_s
        self._resolve, self._transport = resolve, transport
        self.limits = {
            "image": max_bytes,
            "video": max_video_bytes or max_bytes,
            "document": max_document_bytes or max_bytes,
        }

    async def load(self, url: str, param: str, kind: str = "image") -> bytes:
        """The bytes of an image (video, document) part: a data: URL, or https:// when allowed."""
        limit = self.limits[kind]
        if url.startswith("data:"):
            if len(url) > INLINE_DECODE_LIMIT:  # a big photo: decode off the event loop
                return await anyio.to_thread.run_sync(decode_data_url, url, limit, param, kind)
            return decode_data_url(url, limit, param, kind)
        if not url.lower().startswith("https://"):
            raise ApiError(
                400,
                f"{param}: {kind}_url must be a data: URL or an https:// URL",
                param=param,
                code=f"invalid_{kind}_url",
            )
        if not self.allow_remote:
            raise ApiError(
                400,
                f"{param}: this server does not fetch image URLs (start it with --allow-remote-images); send the image as a data: URL",
                param=param,
                code="remote_images_disabled",
            )
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._fetch(url, param, limit)
        except TimeoutError:
            raise ApiError(
                400,
                f"{param}: fetching the image took longer than {self.timeout_s:g} s",
                param=param,
                code="image_fetch_failed",
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:  # ValueError: a bad port number
            raise ApiError(
                400,
                f"{param}: could not fetch the image ({type(exc).__name__}: {exc})",
                param=param,
                code="image_fetch_failed",
            ) from None

    async def _fetch(self, url: str, param: str, limit: int) -> bytes:
        async with httpx.AsyncClient(
            transport=self._transport, follow_redirects=False, timeout=self.timeout_s
        ) as client:
            for _ in range(MAX_REDIRECTS + 1):
                parts = urlsplit(url)
                if parts.scheme != "https" or not parts.hostname:
                    raise ApiError(
                        400,
                        f"{param}: images are only fetched over https (got {url[:100]})",
                        param=param,
                        code="invalid_image_url",
                    )
                address = await self._public_address(parts.hostname, parts.port or 443, param)
                # Connect to the checked address; Host header and TLS name stay the real host.
                pinned = httpx.URL(url).copy_with(host=address)
                request = client.build_request(
                    "GET",
                    pinned,
                    headers={"Host": parts.netloc.rsplit("@", 1)[-1]},
                    extensions={"sni_hostname": parts.hostname},
                )
                response = await client.send(request, stream=True)
                try:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise ApiError(
                            400,
                            f"{param}: the image URL answered HTTP {response.status_code}",
                            param=param,
                            code="image_fetch_failed",
                        )
                    return await self._read_limited(response, param, limit)
                finally:
                    await response.aclose()
        raise ApiError(
            400, f"{param}: more than {MAX_REDIRECTS} redirects", param=param, code="image_fetch_failed"
        )

    async def _public_address(self, host: str, port: int, param: str) -> str:
        try:
            addresses = await self._resolve(host, port)
        except OSError as exc:
            raise ApiError(
                400, f"{param}: cannot resolve {host} ({exc})", param=param, code="image_fetch_failed"
            ) from None
        if not addresses or not all(is_public(a) for a in addresses):
            raise ApiError(
                400,
                f"{param}: {host} is a private or local address; only public hosts are fetched",
                param=param,
                code="image_url_blocked",
            )
        return addresses[0]

    async def _read_limited(self, response: httpx.Response, param: str, limit: int) -> bytes:
        too_big = ApiError(
            400,
            f"{param}: the file is larger than {limit // 2**20} MB",
            param=param,
            code="image_too_large" if limit == self.max_bytes else "file_too_large",
        )
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_big
        data = bytearray()
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) > limit:
                raise too_big
        return bytes(data)
