"""A realistic, compliant multipart newsletter of a chosen size, for benchmarks."""

from __future__ import annotations

import base64

IMPRINT = {
    "company": "Beispiel Shop GmbH",
    "legal_form": "GmbH",
    "representative": "Max Muster",
    "street": "Hauptstraße 5",
    "postcode": "10115",
    "city": "Berlin",
    "country": "Germany",
    "email": "info@customer.example",
    "phone": "+49 30 1234567",
}

_PARAGRAPH = (
    "Unsere Herbstangebote sind da: warme Jacken, robuste Schuhe und vieles mehr. "
    "Entdecken Sie die neue Kollektion und sparen Sie bis zu 30 Prozent. "
)


def newsletter(size: int = 20 * 1024) -> bytes:
    """CRLF bytes of about `size` bytes: text/plain + text/html (QP-free, 8bit) + a logo."""
    footer_text = (
        "Abmelden: https://customer.example/unsubscribe?u=123\r\n"
        "Beispiel Shop GmbH, Hauptstraße 5, 10115 Berlin, info@customer.example\r\n"
    )
    footer_html = (
        '<p><a href="https://customer.example/unsubscribe?u=123">Abmelden</a></p>\r\n'
        "<p>Beispiel Shop GmbH<br>Hauptstra&szlig;e 5<br>10115 Berlin<br>"
        "info@customer.example</p>\r\n"
    )
    logo = base64.encodebytes(bytes(range(256)) * 8).replace(b"\n", b"\r\n")
    fixed = 2500 + len(logo)
    per_part = max(200, (size - fixed) // 2)
    lines = []
    while sum(len(x) for x in lines) < per_part:
        lines.append(_PARAGRAPH.strip() + "\r\n")
    text = "".join(lines)
    html = "".join(f"<p>{line.strip()}</p>\r\n" for line in lines)
    message = (
        "From: Beispiel Shop <news@customer.example>\r\n"
        "To: reader@recipients.example\r\n"
        "Subject: Herbstangebote\r\n"
        "Date: Fri, 27 Nov 2026 10:00:00 +0100\r\n"
        "Message-ID: <bench-1@customer.example>\r\n"
        "X-Campaign-ID: bench-2026\r\n"
        "List-Unsubscribe: <https://customer.example/unsubscribe?u=123>, "
        "<mailto:unsubscribe@customer.example>\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="mixed-b"\r\n'
        "\r\n"
        "--mixed-b\r\n"
        'Content-Type: multipart/alternative; boundary="alt-b"\r\n'
        "\r\n"
        "--alt-b\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        f"{text}\r\n{footer_text}"
        "--alt-b\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        f"<html><body>\r\n{html}{footer_html}</body></html>\r\n"
        "--alt-b--\r\n"
        "--mixed-b\r\n"
        "Content-Type: image/png; name=logo.png\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "Content-Disposition: inline; filename=logo.png\r\n"
        "\r\n"
    ).encode()
    return message + logo + b"--mixed-b--\r\n"
