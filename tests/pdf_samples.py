"""PDFs written in the tests, byte by byte: pages with a real text layer (Helvetica), a
password-protected one (the standard RC4 security handler, revision 2), and scans (Pillow's
image-only PDF). Nothing is downloaded."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence

from PIL import Image

_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _assemble(objects: list[bytes], trailer_extra: bytes = b"") -> bytes:
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{i} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R ".encode()
        + trailer_extra
        + f">>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def text_pdf(pages: Sequence[str], size_pt: tuple[float, float] = (612, 792)) -> bytes:
    """A PDF whose page i shows (and has as its text layer) ``pages[i]``, one line per '\\n'."""
    w, h = size_pt
    n = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    font = 3 + 2 * n
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode()]
    for i, text in enumerate(pages):
        lines = text.split("\n")
        ops = ["BT", "/F1 18 Tf", f"50 {h - 80} Td", "22 TL"]
        for line in lines:
            ops.append(f"({_escape(line)}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w} {h}] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return _assemble(objects)


def scanned_pdf(images: Sequence[Image.Image]) -> bytes:
    """An image-only PDF (no text layer), as a scanner writes one."""
    out = io.BytesIO()
    first, *rest = [im.convert("RGB") for im in images]
    first.save(out, format="PDF", save_all=True, append_images=rest, resolution=72)
    return out.getvalue()


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    i = j = 0
    out = bytearray()
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def encrypted_pdf(user_password: str = "secret") -> bytes:
    """A one-page PDF that opens only with ``user_password`` (40-bit RC4, revision 2)."""
    owner = hashlib.md5((b"owner" + _PAD)[:32]).digest()[:5]
    o = _rc4(owner, (user_password.encode() + _PAD)[:32])
    file_id = b"0123456789abcdef"
    p = -4
    key = hashlib.md5(
        (user_password.encode() + _PAD)[:32] + o + p.to_bytes(4, "little", signed=True) + file_id
    ).digest()[:5]
    u = _rc4(key, _PAD)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        f"<< /Filter /Standard /V 1 /R 2 /O <{o.hex()}> /U <{u.hex()}> /P {p} >>".encode(),
    ]
    return _assemble(objects, f"/Encrypt 4 0 R /ID [<{file_id.hex()}> <{file_id.hex()}>] ".encode())


# --------------------------------------------------------------------------- bombs (issue 29)

# One filled square, one path object to PDFium: ~14 bytes of content that inflate from almost
# nothing (Flate packs repeated text about 1000:1).
SQUARE = b"0 0 1 1 re f\n"


def _flate(data: bytes) -> bytes:
    import zlib

    return zlib.compress(data, 9)


def content_bomb(megabytes: float = 64, op: bytes = SQUARE, pages: int = 1) -> bytes:
    """A PDF whose pages all draw one shared FlateDecode content stream that inflates to
    ``megabytes`` MB of ``op`` repeated: a few hundred KB that PDFium must parse page by page."""
    content = op * max(1, int(megabytes * 1024 * 1024) // len(op))
    packed = _flate(content)
    first_page = 4
    kids = " ".join(f"{first_page + i} 0 R" for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        f"<< /Length {len(packed)} /Filter /FlateDecode >>\nstream\n".encode() + packed + b"\nendstream",
    ]
    for _ in range(pages):
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R >>")
    return _assemble(objects)
