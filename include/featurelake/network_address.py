"""A host as it goes in a URL or an address: IPv6 addresses recognised, and bracketed where their
colons would read as a port."""

from __future__ import annotations

import ipaddress


def is_ipv6_address(text: str) -> bool:
    """True when `text` is an IPv6 address without brackets (`::1`, `fd00::5`, `fe80::1%eth0`)."""
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def url_host(host: str) -> str:
    """`host` as it goes in a URL: an IPv6 address in brackets, anything else (a name, an IPv4
    address, an address already in brackets) as it is. Airflow keeps `[::1]` of a URI connection as
    `::1`, whose colons then read as a port (`tcp://::1:8786`)."""
    return f"[{host}]" if is_ipv6_address(host) else host
