# -*- test-case-name: tests.unit.http.test_tls -*-
"""
TLS settings for the HTTPS ports: a certificate chain and key read from PEM
files, TLS 1.2 at the least, the cipher defaults Twisted keeps current, and
ALPN offering h2 (when the http2 extra is installed) and http/1.1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from twisted.internet.ssl import CertificateOptions, TLSVersion

from .._errors import ConfigError
from .h2 import alpn_protocols


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
    # cryptography's objects: pyOpenSSL's PKey and X509 are deprecated.
    try:
        certificates = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise ConfigError(f"certificate file {cert_path} holds no PEM certificate") from None
    try:
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            f"key file {key_path} holds no PEM private key (or an encrypted one)"
        ) from None
    try:
        # Twisted's hints name pyOpenSSL's types; pyOpenSSL takes these too.
        options = CertificateOptions(
            privateKey=cast(Any, key),
            certificate=cast(Any, certificates[0]),
            extraCertChain=cast(Any, certificates[1:]),
            raiseMinimumTo=TLSVersion.TLSv1_2,
            acceptableProtocols=alpn_protocols(),
        )
        # The context, and with it the key check, is built lazily: build it
        # now, so that a mismatch is found here and not at the first client.
        options.getContext()
        return options
    except Exception as e:  # pyOpenSSL reports a mismatch in several ways
        raise ConfigError(
            f"key file {key_path} does not match certificate {cert_path}: {e}"
        ) from None


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read {what} file {path}: {e.strerror}") from None
