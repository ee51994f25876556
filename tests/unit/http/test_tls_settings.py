"""
Unit tests for the TLS settings beyond a certificate and key
(L{graceful._settings.TLSSettings} in L{graceful.http.tls.load_tls_options}):
an encrypted key, client certificates, ciphers, the lowest version.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase

from graceful._errors import ConfigError
from graceful._settings import TLSSettings
from graceful.http.tls import load_tls_options

ROOT = Path(__file__).resolve().parents[3]
CERT = ROOT / "certs" / "server.crt"
KEY = ROOT / "certs" / "server.key"


class TLSSettingsTests(SynchronousTestCase):
    def encrypted_key(self, password: bytes) -> Path:
        key = serialization.load_pem_private_key(KEY.read_bytes(), password=None)
        folder = Path(tempfile.mkdtemp())
        self.addCleanup(lambda: [p.unlink() for p in folder.iterdir()] and None)
        path = folder / "encrypted.key"
        path.write_bytes(key.private_bytes(  # type: ignore[union-attr]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        ))
        return path

    def test_encrypted_key(self) -> None:
        key = self.encrypted_key(b"s3cret")
        load_tls_options(CERT, key, TLSSettings(key_password="s3cret")).getContext()

    def test_encrypted_key_without_password(self) -> None:
        key = self.encrypted_key(b"s3cret")
        with self.assertRaises(ConfigError) as e:
            load_tls_options(CERT, key)
        self.assertEqual(str(e.exception), f"key file {key} is encrypted: give its password (key_password)")

    def test_wrong_password(self) -> None:
        key = self.encrypted_key(b"s3cret")
        with self.assertRaises(ConfigError) as e:
            load_tls_options(CERT, key, TLSSettings(key_password="guess"))
        self.assertIn("or key_password is wrong", str(e.exception))

    def test_client_certificates_required(self) -> None:
        context = load_tls_options(
            CERT, KEY, TLSSettings(ca_certs=str(CERT), cert_reqs="required")
        ).getContext()
        mode = context.get_verify_mode()
        self.assertTrue(mode & SSL.VERIFY_PEER and mode & SSL.VERIFY_FAIL_IF_NO_PEER_CERT, mode)

    def test_client_certificates_optional(self) -> None:
        context = load_tls_options(
            CERT, KEY, TLSSettings(ca_certs=str(CERT), cert_reqs="optional")
        ).getContext()
        mode = context.get_verify_mode()
        self.assertTrue(mode & SSL.VERIFY_PEER and not mode & SSL.VERIFY_FAIL_IF_NO_PEER_CERT, mode)

    def test_no_client_certificates_by_default(self) -> None:
        self.assertEqual(load_tls_options(CERT, KEY).getContext().get_verify_mode(), SSL.VERIFY_NONE)

    def test_ciphers(self) -> None:
        options = load_tls_options(CERT, KEY, TLSSettings(ciphers="ECDHE+AESGCM"))
        connection = SSL.Connection(options.getContext(), None)
        self.assertTrue(connection.get_cipher_list())
        self.assertTrue(all("GCM" in c for c in connection.get_cipher_list() if "TLS_" not in c))

    def test_ciphers_that_select_none(self) -> None:
        with self.assertRaises(ConfigError) as e:
            load_tls_options(CERT, KEY, TLSSettings(ciphers="NOSUCHCIPHER"))
        self.assertEqual(str(e.exception),
                         "ciphers 'NOSUCHCIPHER' select no cipher this OpenSSL offers")

    def handshake(self, server_context: SSL.Context, client_max: int) -> str:
        """
        A handshake in memory with a client that speaks up to C{client_max}.
        """
        client_context = SSL.Context(SSL.TLS_METHOD)
        client_context.set_max_proto_version(client_max)
        server = SSL.Connection(server_context, None)
        server.set_accept_state()
        client = SSL.Connection(client_context, None)
        client.set_connect_state()
        for _ in range(10):
            for one, other in ((client, server), (server, client)):
                try:
                    one.do_handshake()
                except SSL.WantReadError:
                    pass
                try:
                    other.bio_write(one.bio_read(65536))
                except SSL.WantReadError:
                    pass
        return str(client.get_protocol_version_name())

    def test_tls_1_3_only(self) -> None:
        context = load_tls_options(CERT, KEY, TLSSettings(min_version="1.3")).getContext()
        self.assertRaises(SSL.Error, self.handshake, context, SSL.TLS1_2_VERSION)
        self.assertEqual(
            self.handshake(load_tls_options(CERT, KEY).getContext(), SSL.TLS1_2_VERSION), "TLSv1.2"
        )
