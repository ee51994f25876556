"""
Unit tests for L{graceful.http.tls}: TLS options from PEM files, checked when
loaded, with TLS 1.2 at the least, verified by in-memory handshakes.
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.ssl import CertificateOptions, PrivateCertificate, TLSVersion
from twisted.trial.unittest import SynchronousTestCase

from graceful._errors import ConfigError
from graceful.http.tls import load_tls_options

ROOT = Path(__file__).resolve().parents[3]
CERT = ROOT / "certs" / "server.crt"
KEY = ROOT / "certs" / "server.key"


#: Every cipher at security level 0, where this OpenSSL allows TLS 1.0/1.1.
INSECURE_CIPHERS = b"ALL:@SECLEVEL=0"


class HandshakeFailed(Exception):
    pass


def handshake(
    server_context: SSL.Context, client_context: SSL.Context, rounds: int = 10
) -> tuple[SSL.Connection, SSL.Connection]:
    """
    Run a TLS handshake between two memory-BIO connections.

    @raise HandshakeFailed: either side gave up.
    """
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    done = {id(server): False, id(client): False}
    for _ in range(rounds):
        for connection in (client, server):
            if not done[id(connection)]:
                try:
                    connection.do_handshake()
                    done[id(connection)] = True
                except SSL.WantReadError:
                    pass
                except SSL.Error as e:
                    raise HandshakeFailed(str(e))
        for source, target in ((client, server), (server, client)):
            try:
                target.bio_write(source.bio_read(65536))
            except SSL.WantReadError:
                pass
        if all(done.values()):
            return server, client
    raise HandshakeFailed("handshake did not finish")


def client_context(
    minimum: int | None = None, maximum: int | None = None, insecure: bool = False
) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    if minimum is not None:
        context.set_min_proto_version(minimum)
    if maximum is not None:
        context.set_max_proto_version(maximum)
    if insecure:
        # Let the client offer TLS 1.0/1.1, which OpenSSL's defaults forbid.
        context.set_cipher_list(INSECURE_CIPHERS)
    return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def common_name(certificate: x509.Certificate) -> str:
    [attribute] = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attribute.value)


class LoadTLSOptionsTests(SynchronousTestCase):
    """
    L{load_tls_options}: a working server context from good files, a
    one-line L{ConfigError} naming the file for anything else.
    """

    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="graceful-tls-"))
        self.addCleanup(shutil.rmtree, self.folder, True)

    def write(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        return path

    def assertTLSError(self, cert: Path, key: Path, *fragments: str) -> None:
        error = self.assertRaises(ConfigError, load_tls_options, cert, key)
        self.assertNotIn("\n", str(error))
        for fragment in fragments:
            self.assertIn(fragment, str(error))

    def test_good_files_handshake(self) -> None:
        options = load_tls_options(CERT, KEY)
        server, client = handshake(options.getContext(), client_context())
        self.assertIn(client.get_protocol_version_name(), ("TLSv1.2", "TLSv1.3"))
        peer = client.get_peer_certificate(as_cryptography=True)
        assert peer is not None
        self.assertEqual(common_name(peer), "localhost")

    def test_string_paths(self) -> None:
        options = load_tls_options(str(CERT), str(KEY))
        handshake(options.getContext(), client_context())

    def test_tls_1_2_accepted(self) -> None:
        context = load_tls_options(CERT, KEY).getContext()
        _, client = handshake(context, client_context(maximum=SSL.TLS1_2_VERSION))
        self.assertEqual(client.get_protocol_version_name(), "TLSv1.2")

    def test_older_than_tls_1_2_refused(self) -> None:
        context = load_tls_options(CERT, KEY).getContext()
        options = context.set_options(0)  # adds nothing; returns the options
        self.assertTrue(options & SSL.OP_NO_SSLv3)
        self.assertTrue(options & SSL.OP_NO_TLSv1)
        self.assertTrue(options & SSL.OP_NO_TLSv1_1)
        self.assertFalse(options & SSL.OP_NO_TLSv1_2)

    def test_older_than_tls_1_2_handshake_refused(self) -> None:
        """
        A client that speaks only TLS 1.0 (or 1.1) gets no handshake.  This
        OpenSSL's default security level alone refuses those versions on
        the server, so the server's is lowered as the client's is: what
        refuses them is then graceful's minimum version (see
        L{test_tls_1_0_possible_here} for the same handshake succeeding).
        """
        for version in (SSL.TLS1_VERSION, SSL.TLS1_1_VERSION):
            context = load_tls_options(CERT, KEY).getContext()
            context.set_cipher_list(INSECURE_CIPHERS)
            self.assertRaises(
                HandshakeFailed,
                handshake,
                context,
                client_context(minimum=version, maximum=version, insecure=True),
            )

    def test_tls_1_0_possible_here(self) -> None:
        """
        The handshake of L{test_older_than_tls_1_2_handshake_refused}
        succeeds against a server context that allows TLS 1.0, so that test
        can fail.
        """
        certificate = PrivateCertificate.loadPEM(CERT.read_text() + KEY.read_text())
        for version, name in ((SSL.TLS1_VERSION, "TLSv1"), (SSL.TLS1_1_VERSION, "TLSv1.1")):
            context = CertificateOptions(
                privateKey=certificate.privateKey.original,
                certificate=certificate.original,
                insecurelyLowerMinimumTo=TLSVersion.TLSv1_0,
            ).getContext()
            context.set_cipher_list(INSECURE_CIPHERS)
            _, client = handshake(
                context, client_context(minimum=version, maximum=version, insecure=True)
            )
            self.assertEqual(client.get_protocol_version_name(), name)

    def test_certificate_chain(self) -> None:
        """
        A certificate file may hold the server's certificate then its
        intermediates; the client receives them all.
        """
        ca_key = ec.generate_private_key(ec.SECP256R1())
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        intermediate = _certificate("Test CA", ca_key, "Test CA", ca_key, ca=True)
        leaf = _certificate("leaf.test", leaf_key, "Test CA", ca_key, ca=False)
        pem = serialization.Encoding.PEM
        cert = self.write(
            "chain.pem", leaf.public_bytes(pem) + b"\n" + intermediate.public_bytes(pem)
        )
        key = self.write("leaf.key", key_pem(leaf_key))
        _, client = handshake(load_tls_options(cert, key).getContext(), client_context())
        chain = client.get_peer_cert_chain(as_cryptography=True)
        assert chain is not None
        self.assertEqual([common_name(c) for c in chain], ["leaf.test", "Test CA"])

    def test_missing_certificate(self) -> None:
        missing = self.folder / "none.crt"
        self.assertTLSError(missing, KEY, "certificate file not found", str(missing))

    def test_missing_key(self) -> None:
        missing = self.folder / "none.key"
        self.assertTLSError(CERT, missing, "key file not found", str(missing))

    def test_unreadable_certificate(self) -> None:
        self.assertTLSError(self.folder, KEY, "cannot read certificate file", str(self.folder))

    def test_certificate_not_pem(self) -> None:
        for name, data in {
            "text.crt": b"hello\n",
            "broken.crt": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "key-as-cert.crt": KEY.read_bytes(),
        }.items():
            cert = self.write(name, data)
            self.assertTLSError(cert, KEY, "no PEM certificate", str(cert))

    def test_key_not_pem(self) -> None:
        for name, data in {"text.key": b"hello\n", "cert-as-key.key": CERT.read_bytes()}.items():
            key = self.write(name, data)
            self.assertTLSError(CERT, key, "no PEM private key", str(key))

    def test_mismatched_key(self) -> None:
        key = self.write("other.key", key_pem(ec.generate_private_key(ec.SECP256R1())))
        self.assertTLSError(CERT, key, "does not match", str(key), str(CERT))
