"""
TLS settings for the HTTPS ports: a certificate chain and key read from PEM
files, TLS 1.2 at the least, and the cipher defaults Twisted keeps current.
"""

from __future__ import annotations

from pathlib import Path

from OpenSSL import crypto
from twisted.internet.ssl import CertificateOptions, TLSVersion

from ._errors import ConfigError


def load_tls_options(cert_path: str | Path, key_path: str | Path) -> CertificateOptions:
    """
    Build the server's TLS options from PEM files.

    The certificate file may hold a chain: the server's certificate first,
    then its intermediates.

    @raise ConfigError: a file is missing or unreadable, or the key does not
        belong to the certificate.
    """
    cert_pem = _read(cert_path, "certificate")
    key_pem = _read(key_path, "key")
    try:
        chain = _split_pem(cert_pem)
        certificates = [crypto.load_certificate(crypto.FILETYPE_PEM, c) for c in chain]
    except (crypto.Error, ValueError):
        raise ConfigError(f"certificate file {cert_path} holds no PEM certificate")
    try:
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem)
    except crypto.Error:
        raise ConfigError(f"key file {key_path} holds no PEM private key")
    try:
        options = CertificateOptions(
            privateKey=key,
            certificate=certificates[0],
            extraCertChain=certificates[1:],
            raiseMinimumTo=TLSVersion.TLSv1_2,
        )
        # The context, and with it the key check, is built lazily: build it
        # now, so that a mismatch is found here and not at the first client.
        options.getContext()
        return options
    except Exception as e:  # pyOpenSSL reports a mismatch in several ways
        raise ConfigError(
            f"key file {key_path} does not match certificate {cert_path}: {e}"
        )


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}")
    except OSError as e:
        raise ConfigError(f"cannot read {what} file {path}: {e.strerror}")


def _split_pem(pem: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    parts = [p + marker for p in pem.split(marker) if b"-----BEGIN CERTIFICATE-----" in p]
    if not parts:
        raise ValueError("no certificate")
    return parts
