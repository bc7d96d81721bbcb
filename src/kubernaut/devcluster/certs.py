"""Certificates and keys for the local control plane: a CA, serving certs, an admin client cert."""

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertPaths:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    usage: list[x509.ObjectIdentifier] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def write_cert_and_key(
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, cert_path: Path, key_path: Path
) -> None:
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(_pem_key(key))
    key_path.chmod(0o600)


def issue_serving_cert(
    ca_cert_path: Path, ca_key_path: Path, hosts: list[str], cert_path: Path, key_path: Path
) -> None:
    """A TLS serving certificate for `hosts` (names or IPs), signed by the given CA."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    key = _key()
    cert = _cert(_name(hosts[0]), key, ca_cert.subject, ca_key, sans=sans, usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    write_cert_and_key(cert, key, cert_path, key_path)


def issue_client_cert(
    ca_cert_path: Path, ca_key_path: Path, user: str, groups: list[str], cert_path: Path, key_path: Path
) -> None:
    """A client certificate: CN is the user name, O entries the groups (as the API server reads them)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, user)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
    key = _key()
    cert = _cert(x509.Name(attrs), key, ca_cert.subject, ca_key, usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    write_cert_and_key(cert, key, cert_path, key_path)


def generate_pki(directory: Path) -> CertPaths:
    """Everything the API server and an admin client need, written into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )
    ca_key = _key()
    ca_name = _name("kubernaut-dev-ca")
    write_cert_and_key(_cert(ca_name, ca_key, ca_name, ca_key, ca=True), ca_key, paths.ca_cert, paths.ca_key)
    issue_serving_cert(
        paths.ca_cert,
        paths.ca_key,
        ["localhost", "127.0.0.1", "::1", "kubernetes.default"],
        paths.serving_cert,
        paths.serving_key,
    )
    issue_client_cert(
        paths.ca_cert, paths.ca_key, "kubernaut-admin", ["system:masters"], paths.admin_cert, paths.admin_key
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    paths.sa_key.write_bytes(_pem_key(sa_key))
    paths.sa_key.chmod(0o600)
    paths.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return paths
