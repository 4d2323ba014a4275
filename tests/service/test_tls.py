"""TLS and mutual TLS on a real server, with certificates made for the test by a throwaway CA."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from deltamem.client import MemoryClient, tls_channel

x509 = pytest.importorskip("cryptography.x509", reason="the TLS tests make certificates with `cryptography`")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def issue(name: str, issuer=None, server: bool = False):
    """(key, certificate); self-signed CA when `issuer` is None, else signed by issuer = (key, cert)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[1].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(issuer[0] if issuer else key, hashes.SHA256())


def write(directory, name, key, cert):
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(directory / f"{name}.pem"), str(directory / f"{name}.key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    ca = issue("deltamem test CA")
    rogue_ca = issue("someone else's CA")
    files = {
        "ca": write(root, "ca", *ca)[0],
        "server": write(root, "server", *issue("127.0.0.1", ca, server=True)),
        "client": write(root, "client", *issue("agent", ca)),
        "rogue": write(root, "rogue", *issue("intruder", rogue_ca)),
    }
    return root, files


def works(channel) -> bool:
    with MemoryClient(channel=channel, timeout=10) as client:
        try:
            client.create_session()
            return True
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            return False


def test_tls_server_talks_only_tls(start_server_process, pki, tmp_path):
    _, files = pki
    cert, key = files["server"]
    proc = start_server_process("--data-dir", str(tmp_path), "--tls-cert", cert, "--tls-key", key)
    target = f"127.0.0.1:{proc.port}"
    try:
        assert works(tls_channel(target, files["ca"]))
        assert not works(grpc.insecure_channel(target))
        assert any("transport: TLS" in line for line in proc.lines)
        cli = subprocess.run(
            [str(Path(sys.executable).parent / "deltamem"), "--target", target, "--tls-ca", files["ca"], "create"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert cli.returncode == 0 and "session_id" in cli.stdout, cli.stderr
    finally:
        proc.stop()


def test_mutual_tls_requires_a_client_certificate_from_the_trusted_ca(start_server_process, pki, tmp_path):
    _, files = pki
    cert, key = files["server"]
    proc = start_server_process(
        "--data-dir", str(tmp_path), "--tls-cert", cert, "--tls-key", key, "--tls-client-ca", files["ca"]
    )
    target = f"127.0.0.1:{proc.port}"
    try:
        assert works(tls_channel(target, files["ca"], *files["client"]))
        assert not works(tls_channel(target, files["ca"]))  # no client certificate
        assert not works(tls_channel(target, files["ca"], *files["rogue"]))  # signed by another CA
    finally:
        proc.stop()
