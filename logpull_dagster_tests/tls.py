"""Test certificates: a throwaway CA and a server certificate it signed, as PEM files.

Why files: the simulator runs as a subprocess too, and ``--tls-cert``/``--tls-key`` take paths; clients
then trust the CA with ``ssl.create_default_context(cafile=ca)``, while a default client (certifi) must
refuse the server, which is exactly the check a TLS test wants.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import trustme


class TlsFiles(NamedTuple):
    """Paths of the CA certificate (what a client trusts) and of the server's chain and key."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path, host: str = "127.0.0.1") -> TlsFiles:
    """Write ``ca.pem``, ``cert.pem`` (leaf then CA chain) and ``key.pem`` for ``host`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert(host)
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    files.cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files.key))
    return files


class ClientTlsFiles(NamedTuple):
    """Paths of a client certificate (leaf then CA chain) and its key, for mutual TLS."""

    cert: Path
    key: Path


def make_mutual_tls_files(directory: Path, host: str = "127.0.0.1") -> tuple[TlsFiles, ClientTlsFiles]:
    """As :func:`make_tls_files`, plus ``client.pem``/``client-key.pem``: a client certificate the same CA
    signed, which a server that checks its clients' certificates against ``ca.pem`` accepts."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert(host)
    client = ca.issue_cert("logpull-client.example")  # trustme's leaves carry both serverAuth and clientAuth
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    files.cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files.key))
    mine = ClientTlsFiles(directory / "client.pem", directory / "client-key.pem")
    mine.cert.write_bytes(b"".join(pem.bytes() for pem in client.cert_chain_pems))
    client.private_key_pem.write_to_path(str(mine.key))
    return files, mine
