"""How a person connects: addresses a remote user can use, and virt-viewer connection files.

A server listening on ``0.0.0.0`` or ``::`` cannot be reached at that address: the CLI prints
the host's name and its addresses instead.  A ``.vv`` file (virt-viewer's connection file,
``virt-viewer:man/remote-viewer.pod`` "CONNECTION FILE") carries the password without putting
it on a command line: ``remote-viewer FILE.vv``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ConnectionFile", "reachable_hosts", "spice_uri"]

_SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address


def _interface_ipv4() -> list[str]:
    """IPv4 addresses of the host's interfaces (Linux; empty elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Windows
        return []
    addresses = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # never sends
        for _index, name in socket.if_nameindex():
            request = struct.pack("256s", name[:15].encode())
            try:
                reply = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
            except OSError:
                continue  # no IPv4 address on it
            addresses.append(socket.inet_ntoa(reply[20:24]))
    return addresses


def _interface_ipv6() -> list[str]:
    """Global IPv6 addresses of the host's interfaces (Linux ``/proc/net/if_inet6``)."""
    addresses = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            address = ipaddress.IPv6Address(bytes.fromhex(raw))
            if not (address.is_loopback or address.is_link_local):
                addresses.append(str(address))
    return addresses


def reachable_hosts(host: str) -> list[str]:
    """Names and addresses a client elsewhere can use for a server listening on ``host``:
    the host's name and every non-loopback address for a wildcard, else ``host`` itself."""
    try:
        listen = ipaddress.ip_address(host)
    except ValueError:
        return [host]  # a name: it is what clients use
    if not listen.is_unspecified:
        return [host]
    hosts = []
    name = socket.getfqdn()
    if name and name not in ("localhost", "localhost.localdomain"):
        hosts.append(name)
    addresses = [a for a in _interface_ipv4() if not ipaddress.ip_address(a).is_loopback]
    if listen.version == 6:
        addresses += _interface_ipv6()
    hosts += [a for a in addresses if a not in hosts]
    return hosts or ["127.0.0.1"]


def spice_uri(
    host: str, port: int, tls_port: int | None = None, password: str | None = None
) -> str:
    """``spice://host:port[?tls-port=…][&password=…]`` as remote-viewer takes it."""
    from urllib.parse import quote

    if ":" in host:
        host = f"[{host}]"
    query = []
    if tls_port is not None:
        query.append(f"tls-port={tls_port}")
    if password is not None:
        query.append(f"password={quote(password, safe='')}")
    return f"spice://{host}:{port}" + ("?" + "&".join(query) if query else "")


@dataclass(frozen=True, slots=True)
class ConnectionFile:
    """A virt-viewer connection file (``[virt-viewer]`` section)."""

    host: str
    port: int
    password: str | None = None
    title: str = "spiceserver"
    tls_port: int | None = None
    #: PEM of the CA that signed the server's certificate (the certificate itself if it is
    #: self-signed), for TLS.
    ca_pem: str | None = None
    #: The certificate's subject, for spice-gtk's check when ``host`` is not in it.
    host_subject: str | None = None

    def text(self) -> str:
        def value(text: str) -> str:
            if "\r" in text or "\0" in text:
                raise ValueError("a connection file value cannot hold CR or NUL")
            return text.replace("\n", "\\n")  # GKeyFile escapes

        lines = [
            "[virt-viewer]",
            "type=spice",
            f"host={value(self.host)}",
            f"port={self.port}",
            f"title={value(self.title)}",
            "delete-this-file=0",
        ]
        if self.password is not None:
            lines.append(f"password={value(self.password)}")
        if self.tls_port is not None:
            lines.append(f"tls-port={self.tls_port}")
            if self.ca_pem is not None:
                lines.append(f"ca={value(self.ca_pem.strip())}")
            if self.host_subject is not None:
                lines.append(f"host-subject={value(self.host_subject)}")
        return "\n".join(lines) + "\n"

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write it readable by its owner only (it holds the password)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            os.fchmod(file.fileno(), 0o600)  # an existing file keeps no wider mode
            file.write(self.text())


def certificate_subject(pem: bytes) -> str:
    """A PEM certificate's subject as spice-gtk's ``host-subject`` takes it
    (``C=..,O=..,CN=..``: RDNs in certificate order, comma-separated)."""
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(pem)
    return ",".join(attribute.rfc4514_string() for attribute in certificate.subject)
