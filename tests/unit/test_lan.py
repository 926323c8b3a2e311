"""The office mode's pure parts: which public addresses reach no phone, the addresses it prints,
and the terminal QR code, read back by a real decoder (zxing-cpp)."""

from __future__ import annotations

import pytest

from giliran_ops.lan import Office, is_loopback_url, loopback_warning, terminal_qr
from tests.terminal_qr import decode_terminal_qr


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8101", True),
        ("http://127.8.9.10", True),
        ("http://localhost:8101", True),
        ("http://[::1]:8101", True),
        ("https://10.231.4.1", False),
        ("https://192.168.1.10:8443", False),
        ("https://antrian.bekasikab.go.id", False),
    ],
)
def test_a_loopback_public_address_is_warned_about(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback
    warning = loopback_warning(url)
    assert (warning is not None) is loopback
    if warning:
        assert "--lan" in warning and url in warning


def test_the_office_addresses_name_a_port_only_when_not_the_standard_one() -> None:
    assert Office("10.0.0.5", 443, 80).public_url == "https://10.0.0.5"
    assert Office("10.0.0.5", 443, 80).ca_url == "http://10.0.0.5/giliran-ca.crt"
    unprivileged = Office("10.0.0.5", 8443, 8080)
    assert unprivileged.public_url == "https://10.0.0.5:8443"
    assert unprivileged.ca_url == "http://10.0.0.5:8080/giliran-ca.crt"


def test_the_terminal_qr_code_reads_back() -> None:
    url = "https://192.168.100.200:8443/device/pair/Q2xhc3NpYy1wYWly"
    drawing = terminal_qr(url)
    assert decode_terminal_qr(drawing) == [url]
    # Narrow enough for an 80-column terminal, half as many lines as modules.
    assert max(len(line) for line in drawing.splitlines()) <= 80
