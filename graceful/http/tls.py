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
from OpenSSL.crypto import X509
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion

from .._errors import ConfigError
from .._settings import TLSSettings
from .h2 import alpn_protocols


def load_tls_options(
    cert_path: str | Path, key_path: str | Path, tls: TLSSettings | None = None
) -> CertificateOptions:
    """
    Build the server's TLS options from PEM files.

    The certificate file may hold a chain: the server's certificate first,
    then its intermediates.

    @param tls: a key's password, client certificates, ciphers, the
        lowest TLS version.

    @raise ConfigError: a file is missing or unreadable, the key does not
        belong to the certificate, or C{tls} names no usable cipher.
    """
    tls = tls if tls is not None else TLSSettings()
    cert_pem = _read(cert_path, "certificate")
    key_pem = _read(key_path, "key")
    # cryptography's objects: pyOpenSSL's PKey and X509 are deprecated.
    try:
        certificates = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise ConfigError(f"certificate file {cert_path} holds no PEM certificate") from None
    try:
        password = tls.key_password.encode() if tls.key_password is not None else None
        key = load_pem_private_key(key_pem, password=password)
    except TypeError:
        raise ConfigError(
            f"key file {key_path} is encrypted: give its password (key_password)"
            if password is None else f"key file {key_path} is not encrypted: drop key_password"
        ) from None
    except ValueError:
        raise ConfigError(
            f"key file {key_path} holds no PEM private key, or key_password is wrong"
        ) from None
    extra: dict[str, Any] = {}
    if tls.ciphers:
        extra["acceptableCiphers"] = AcceptableCiphers.fromOpenSSLCipherString(tls.ciphers)
    if tls.ca_certs and tls.cert_reqs != "none":
        try:
            authorities = x509.load_pem_x509_certificates(_read(tls.ca_certs, "ca_certs"))
        except ValueError:
            raise ConfigError(f"ca_certs file {tls.ca_certs} holds no PEM certificate") from None
        extra.update(
            verify=True,
            caCerts=[X509.from_cryptography(a) for a in authorities],
            requireCertificate=tls.cert_reqs == "required",
        )
    try:
        # Twisted's hints name pyOpenSSL's types; pyOpenSSL takes these too.
        options = _options(
            privateKey=cast(Any, key),
            certificate=cast(Any, certificates[0]),
            extraCertChain=cast(Any, certificates[1:]),
            raiseMinimumTo=TLSVersion.TLSv1_3 if tls.min_version == "1.3" else TLSVersion.TLSv1_2,
            acceptableProtocols=alpn_protocols(),
            **extra,
        )
        # The context, and with it the key check, is built lazily: build it
        # now, so that a mismatch is found here and not at the first client.
        options.getContext()
        return options
    except _NoCiphers:
        raise ConfigError(f"ciphers {tls.ciphers!r} select no cipher this OpenSSL offers") from None
    except Exception as e:  # pyOpenSSL reports a mismatch in several ways
        raise ConfigError(
            f"key file {key_path} does not match certificate {cert_path}: {e}"
        ) from None


def _options(**kwargs: Any) -> CertificateOptions:
    try:
        return CertificateOptions(**kwargs)
    except ValueError as e:  # Twisted's word for ciphers that select none
        if "acceptableCiphers" not in kwargs:
            raise
        raise _NoCiphers(str(e)) from None


class _NoCiphers(Exception):
    pass


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read {what} file {path}: {e.strerror}") from None

