"""Knowledge-base fixtures: documents in every format SHVYA reads."""

from __future__ import annotations

PRICING_MD = """# Acme Motors

## Premium plan
The premium plan costs 4,999 INR per month and includes 10 seats and 24x7 phone support.

## Basic plan
The basic plan is 999 INR a month for 2 seats.

## Showroom
Our Pune showroom is open 9:30 am to 6 pm, Monday to Saturday.
"""


def tiny_pdf(*lines: str) -> bytes:
    """A real one-page PDF with a text layer, written by hand (no PDF library needed)."""
    text_ops = " ".join(f"({line}) Tj T*" for line in lines)
    content = f"BT /F1 12 Tf 14 TL 72 720 Td {text_ops} ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return out
