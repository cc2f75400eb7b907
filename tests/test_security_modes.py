"""Modes: open on loopback with a warning, refused on other addresses without credentials unless
--insecure, enforcing once credentials exist (even when created while the server runs); HTTPS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from huaweicloudsdkmodelarts.v1 import ShowTrainingJobEnginesRequest, ShowTrainingJobFlavorsRequest

from conftest import DEFAULT_CONFIG, PROJECT, Server, _kill_leftover_workers, wait_for
from openarts.config import load_settings
from openarts.security.config import SecurityConfig
from openarts.security.modes import BindRefused, decide, is_loopback
from security_support import FlagServer, create_key, sdk_for_key, signed_client


def test_open_on_loopback_says_so_and_switches_to_enforcing_when_credentials_appear(
        make_server: Callable[..., Server]) -> None:
    server = make_server()
    log = server.log_path.read_text()
    assert "WARNING" in log and "OPEN" in log and "credentials create" in log
    assert httpx.get(f"{server.api}/training-job-engines").status_code == 200  # open mode
    key = create_key(server.data_dir, PROJECT, "alice")  # while it runs
    wait_for(lambda: httpx.get(f"{server.api}/training-job-engines").status_code == 401, timeout=10,
             message="enforcing")
    assert signed_client(server, key).get("/training-job-engines").status_code == 200


def test_non_loopback_without_credentials_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "openarts.cli.main", "serve", "--host", "0.0.0.0", "--port", "0",
                           "--data-dir", str(tmp_path / "d")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "refusing to serve on 0.0.0.0 without credentials" in proc.stderr
    assert not (tmp_path / "d" / "server.json").exists()


def test_mode_decisions(tmp_path: Path) -> None:
    cfg = SecurityConfig.from_settings(load_settings(tmp_path / "d"))
    assert decide(cfg, "127.0.0.1", insecure=False).name == "open"
    assert decide(cfg, "::1", insecure=False).name == "open"
    assert decide(cfg, "0.0.0.0", insecure=True).name == "insecure"
    with pytest.raises(BindRefused):
        decide(cfg, "192.0.2.10", insecure=False)
    create_key(tmp_path / "d", PROJECT, "alice")
    assert decide(cfg, "0.0.0.0", insecure=False).name == "enforcing"
    assert is_loopback("localhost") and is_loopback("127.8.9.10") and not is_loopback("example.org")


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "openarts-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[FlagServer]:
    data_dir = tmp_path / "tls"
    data_dir.mkdir()
    cert, key = _self_signed(tmp_path)
    server = FlagServer(data_dir, DEFAULT_CONFIG, tmp_path / "tls.log",
                        flags=["--tls-cert", str(cert), "--tls-key", str(key)], ca_file=cert)
    server.env = {}
    yield server
    server.stop()
    _kill_leftover_workers(data_dir)


def test_https_with_the_sdk(tls_server: FlagServer) -> None:
    from huaweicloudsdkcore.http.http_config import HttpConfig

    key = create_key(tls_server.data_dir, PROJECT, "alice")
    tls_server.start()
    assert tls_server.url.startswith("https://127.0.0.1:")
    trusted = HttpConfig.get_default_config()
    trusted.ssl_ca_cert = str(tls_server.ca_file)
    sdk = sdk_for_key(tls_server, key, http_config=trusted)
    assert sdk.show_training_job_engines(ShowTrainingJobEnginesRequest()).status_code == 200
    unverified = HttpConfig.get_default_config()
    unverified.ignore_ssl_verification = True
    sdk = sdk_for_key(tls_server, key, http_config=unverified)
    assert sdk.show_training_job_flavors(ShowTrainingJobFlavorsRequest()).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{tls_server.url}/health")  # the default trust store does not know this certificate


def test_a_server_whose_master_key_is_gone_refuses_to_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    create_key(data_dir, PROJECT, "alice")
    (data_dir / "keys" / "master.key").unlink()
    proc = subprocess.run([sys.executable, "-m", "openarts.cli.main", "serve", "--port", "0",
                           "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "cannot be decrypted" in proc.stderr
