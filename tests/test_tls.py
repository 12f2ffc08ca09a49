"""Downloads over https from a real TLS server on 127.0.0.1, and the CA certificates that
executor.http loads only at the first TLS handshake (TLSContext).

The server's certificate (127.0.0.1 and localhost) is signed by a CA made here; a test trusts
that CA with SSL_CERT_FILE, as a host with a private mirror would.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from support.localserver import LocalServer
from executor.http import Download, TLSContext, make_client
from manifests.errors import ConfigError, NetworkError

from conftest import download_step, fast_settings, files_under, payload, sha256

DATA = payload(300_000)
PATH = "/packs/db.bin"


def _certificate(subject: str, key, issuer: x509.Certificate | None, issuer_key, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if ca:
        usage = dict(digital_signature=False, key_cert_sign=True, crl_sign=True)
    else:
        usage = dict(digital_signature=True, key_cert_sign=False, crl_sign=False)
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    builder = builder.add_extension(
        x509.KeyUsage(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False, decipher_only=False, **usage),
        critical=True,
    )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """ca.pem (what a client trusts), server.pem and server.key (127.0.0.1, localhost)."""
    root = tmp_path_factory.mktemp("pki")
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("devops-cp test CA", ca_key, None, ca_key, ca=True)
    server_cert = _certificate("127.0.0.1", server_key, ca_cert, ca_key, ca=False)
    (root / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (root / "server.pem").write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    (root / "server.key").write_bytes(
        server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return root


@pytest.fixture
def tls_server(pki):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    with LocalServer(tls=context) as server:
        server.add(PATH, DATA)
        yield server


@pytest.fixture
def trust_ca(pki, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(pki / "ca.pem"))


def client_context(client) -> ssl.SSLContext:
    """The context of the client's connection pool (TLSContext, shared by its proxies' pools)."""
    return client._transport._pool._ssl_context


def fetch(client, url: str, partial, settings=None):
    settings = settings or fast_settings()
    return Download(client=client, url=url, partial=partial, what=PATH, settings=settings).run(sha256(DATA))


# --- through the CLI ---------------------------------------------------------------------------


def test_https_install_with_the_ca_trusted(cli, tls_server, trust_ca, write_recipe, isolated_env):
    url = tls_server.url(PATH)
    assert url.startswith("https://127.0.0.1:")
    write_recipe("tls-db", [download_step(url, "db/db.bin", DATA)])
    result = cli("install", "tls-db", "--json", "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert (isolated_env.sample_dir() / "db" / "db.bin").read_bytes() == DATA
    assert result.json()["results"][0]["record"]["files"][0]["sha256"] == sha256(DATA)
    assert [r.status for r in tls_server.requests] == [200]


def test_https_install_of_an_untrusted_certificate_fails_with_exit_6(cli, tls_server, write_recipe, isolated_env):
    write_recipe("tls-db", [download_step(tls_server.url(PATH), "db/db.bin", DATA)])
    result = cli("install", "tls-db", "--progress", "none")
    assert result.exit_code == 6, result.stderr
    assert "certificate verify failed" in result.stderr
    assert tls_server.requests == []  # no request got through the handshake
    assert [p for p in files_under(isolated_env.sample_dir()) if not p.startswith(".devops-cp-staging/")] == []
    assert not isolated_env.records_dir.exists() or list(isolated_env.records_dir.iterdir()) == []


def test_a_refused_certificate_is_not_retried(tls_server, tmp_path):
    """Retrying cannot make the same certificate acceptable: one handshake, no backoff, a hint."""
    waits: list[float] = []
    with make_client() as client:
        with pytest.raises(NetworkError) as exc:
            fetch(client, tls_server.url(PATH), tmp_path / "db.part", fast_settings(retries=5, sleep=waits.append))
    assert waits == []
    assert "certificate was refused" in exc.value.message and "certificate verify failed" in exc.value.message
    assert "SSL_CERT_FILE" in exc.value.hint


# --- the CA certificates: loaded by the first handshake, once ----------------------------------


def test_plain_http_never_loads_a_ca_and_https_does(local_server, tls_server, trust_ca, tmp_path):
    local_server.add(PATH, DATA)
    with make_client(fast_settings()) as client:
        context = client_context(client)
        assert context.cert_store_stats()["x509_ca"] == 0
        assert fetch(client, local_server.url(PATH), tmp_path / "http.part").sha256 == sha256(DATA)
        assert context.cert_store_stats()["x509_ca"] == 0
        assert fetch(client, tls_server.url(PATH), tmp_path / "https.part").sha256 == sha256(DATA)
        assert context.cert_store_stats()["x509_ca"] == 1  # SSL_CERT_FILE's CA, and only it (as httpx)


def test_two_first_handshakes_at_once_load_the_ca_once_and_both_succeed(tls_server, trust_ca, tmp_path):
    with make_client(fast_settings()) as client:
        context = client_context(client)
        loads = []
        real_load = context.load_verify_locations

        def slow_load(*args, **kwargs):  # widens the window in which the other thread could handshake without the CA
            loads.append(args or kwargs)
            threading.Event().wait(0.3)
            return real_load(*args, **kwargs)

        context.load_verify_locations = slow_load
        start = threading.Barrier(2)
        results, errors = {}, []

        def download(name: str) -> None:
            try:
                start.wait()
                results[name] = fetch(client, tls_server.url(PATH), tmp_path / f"{name}.part", fast_settings(retries=0)).sha256
            except Exception as exc:  # noqa: BLE001 (reported below)
                errors.append(exc)

        threads = [threading.Thread(target=download, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert results == {"a": sha256(DATA), "b": sha256(DATA)}
    assert len(loads) == 1
    assert tls_server.connections_opened == 2  # two connections, two handshakes


def test_the_ca_is_chosen_when_the_client_is_made_as_httpx_would(pki, monkeypatch):
    assert TLSContext()._ca is None  # certifi's bundle, located at the first handshake
    monkeypatch.setenv("SSL_CERT_DIR", str(pki))
    assert TLSContext()._ca == ("SSL_CERT_DIR", "capath", str(pki))
    monkeypatch.setenv("SSL_CERT_FILE", str(pki / "ca.pem"))  # wins over SSL_CERT_DIR
    assert TLSContext()._ca == ("SSL_CERT_FILE", "cafile", str(pki / "ca.pem"))


def test_an_unreadable_ssl_cert_file_fails_https_only_with_a_clear_error(local_server, tls_server, tmp_path, monkeypatch):
    """httpx would have raised FileNotFoundError when the client was made, for any URL."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    local_server.add(PATH, DATA)
    with make_client(fast_settings()) as client:
        assert fetch(client, local_server.url(PATH), tmp_path / "http.part").sha256 == sha256(DATA)
        with pytest.raises(ConfigError, match="SSL_CERT_FILE") as caught:
            fetch(client, tls_server.url(PATH), tmp_path / "https.part")
    assert str(tmp_path / "missing.pem") in caught.value.message
    assert tls_server.requests == []


def test_settings_are_those_of_ssl_create_default_context():
    ours, theirs = TLSContext(), ssl.create_default_context()
    for name in ("protocol", "options", "verify_mode", "verify_flags", "check_hostname", "minimum_version", "maximum_version",
                 "post_handshake_auth", "hostname_checks_common_name", "keylog_filename"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.get_ciphers() == theirs.get_ciphers()
