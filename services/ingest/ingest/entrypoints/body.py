"""Reading an untrusted request body with a size limit that holds on the wire and after decompression."""

from __future__ import annotations

import zlib

from fastapi import Request

from tally_shared.http import ApiError


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"request body is over the limit of {limit} bytes",
                    {"limit_bytes": limit})


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise ApiError(400, "bad_request", "Content-Length is not a number") from None
        if length > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return _inflate(body, limit, zlib.MAX_WBITS | 16)
    if encoding == "deflate":
        return _inflate(body, limit, zlib.MAX_WBITS)
    raise ApiError(415, "unsupported_media_type", f"Content-Encoding {encoding[:40]!r} is not supported; "
                   "use gzip or none")


def _inflate(data: bytes, limit: int, wbits: int) -> bytes:
    """Decompress at most ``limit`` bytes; a body that inflates beyond it is refused (zip bombs)."""
    out: list[bytes] = []
    size = 0
    try:
        while True:
            d = zlib.decompressobj(wbits)
            piece = d.decompress(data, limit - size + 1)
            size += len(piece)
            if size > limit or d.unconsumed_tail:
                raise _too_large(limit)
            out.append(piece)
            if not d.eof:
                raise ApiError(400, "bad_request", "compressed body is truncated")
            data = d.unused_data
            if not data:  # gzip allows several members back to back
                break
    except zlib.error as exc:
        raise ApiError(400, "bad_request", f"body is not valid compressed data: {exc}") from None
    return b"".join(out)
