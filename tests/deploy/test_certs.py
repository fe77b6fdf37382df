"""fedmodel.deploy.certs: the CA, the SuperLink certificate and node keys are what TLS and Flower accept.

Fast and offline: real `openssl verify`, cryptography's X.509 path validation and a real TLS handshake on
127.0.0.1; the node key formats are checked with the loaders Flower 1.23 itself calls (and a check that the
installed Flower still calls them). Importing any flwr module imports TensorFlow, so the one test that calls
Flower's own functions is marked slow.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from fedmodel.deploy import certs
from fedmodel.deploy.certs import (
    CertPaths,
    NodeKeyPaths,
    federation_snippet,
    make_ca,
    make_node_keys,
    make_server_certificate,
)
from fedmodel.errors import ConfigError

HOSTS = ["127.0.0.1", "localhost", "server.example.org", "::1", "10.0.0.5"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertPaths, CertPaths]:
    """One CA and one server certificate for the read-only tests (key generation is the slow part)."""
    directory = tmp_path_factory.mktemp("certs")
    ca = make_ca(directory)
    return ca, make_server_certificate(directory, ca=ca, hosts=HOSTS)


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# -- the CA and the server certificate -----------------------------------------------------------------


def test_ca_is_a_self_signed_p384_ca(pki: tuple[CertPaths, CertPaths]) -> None:
    ca, _ = pki
    assert (ca.cert.name, ca.key.name) == ("ca.crt", "ca.key")
    cert = load_cert(ca.cert)
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign and not usage.value.digital_signature
    key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1)
    assert ca.key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8


def test_server_certificate_verifies_with_openssl(pki: tuple[CertPaths, CertPaths]) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not on PATH, so `openssl verify` cannot be run")
    ca, server = pki
    for check in (["-verify_ip", "127.0.0.1"], ["-verify_ip", "::1"], ["-verify_hostname", "server.example.org"]):
        result = subprocess.run(
            ["openssl", "verify", "-purpose", "sslserver", *check, "-CAfile", str(ca.cert), str(server.cert)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0 and result.stdout.strip() == f"{server.cert}: OK", result.stdout + result.stderr
    # A host the certificate was not made for fails.
    result = subprocess.run(
        ["openssl", "verify", "-verify_hostname", "other.example.org", "-CAfile", str(ca.cert), str(server.cert)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0


def test_server_certificate_verifies_with_cryptography(pki: tuple[CertPaths, CertPaths], tmp_path: Path) -> None:
    ca, server = pki
    leaf = load_cert(server.cert)
    store = Store([load_cert(ca.cert)])
    names: list[x509.DNSName | x509.IPAddress] = [
        x509.DNSName("localhost"),
        x509.DNSName("server.example.org"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    for name in names:
        chain = PolicyBuilder().store(store).build_server_verifier(name).verify(leaf, [])
        assert chain[-1] == load_cert(ca.cert)
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(x509.DNSName("other.example.org")).verify(leaf, [])
    other = make_ca(tmp_path / "other")
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([load_cert(other.cert)])).build_server_verifier(x509.DNSName("localhost")).verify(
            leaf, []
        )


def test_server_certificate_san_and_usage(pki: tuple[CertPaths, CertPaths]) -> None:
    ca, server = pki
    assert (server.cert.name, server.key.name) == ("server.pem", "server.key")
    cert = load_cert(server.cert)
    cert.verify_directly_issued_by(load_cert(ca.cert))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "server.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.0.0.5"),
    ]
    assert len(list(san)) == len(HOSTS)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc <= load_cert(ca.cert).not_valid_after_utc
    key = serialization.load_pem_private_key(server.key.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()


def test_private_keys_are_0600_and_certificates_0644_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        ca = make_ca(tmp_path)
        server = make_server_certificate(tmp_path, ca=ca, hosts=["localhost"])
        node = make_node_keys(tmp_path, "node-000")
    finally:
        os.umask(old)
    assert [mode(p) for p in (ca.key, server.key, node.private)] == [0o600] * 3
    assert [mode(p) for p in (ca.cert, server.cert, node.public)] == [0o644] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ca.crt", "ca.key", "server.pem", "server.key", "node-000.key", "node-000.pub"]
    )  # no temp files left


def test_private_keys_are_created_0600_never_wider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[str, int]] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        if flags & os.O_CREAT:
            opened.append((os.fspath(path), mode))
        return real_open(path, flags, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(certs.os, "open", spy)
    make_ca(tmp_path)
    make_node_keys(tmp_path, "n")
    key_modes = {mode for path, mode in opened if ".key." in Path(path).name}
    assert key_modes == {0o600}, opened
    assert all(flags_mode in (0o600, 0o644) for _, flags_mode in opened)


def test_refuses_to_overwrite_and_force_replaces(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    server = make_server_certificate(tmp_path, ca=ca, hosts=["localhost"])
    node = make_node_keys(tmp_path, "node-000")
    before = snapshot(tmp_path)

    with pytest.raises(ConfigError, match=r"ca\.crt already exists.*new directory"):
        make_ca(tmp_path)
    with pytest.raises(ConfigError, match=r"server\.pem already exists.*new directory"):
        make_server_certificate(tmp_path, ca=ca, hosts=["localhost"])
    with pytest.raises(ConfigError, match=r"node-000\.key already exists"):
        make_node_keys(tmp_path, "node-000")
    # Only one of the pair there: still refused, and the missing one is not written either.
    server.key.unlink()
    with pytest.raises(ConfigError, match=r"server\.pem already exists"):
        make_server_certificate(tmp_path, ca=ca, hosts=["localhost"])
    assert not server.key.exists()
    server.key.write_bytes(before["server.key"])
    os.chmod(server.key, 0o600)
    assert snapshot(tmp_path) == before

    assert make_ca(tmp_path, force=True) == ca
    assert make_server_certificate(tmp_path, ca=ca, hosts=["localhost"], force=True) == server
    assert make_node_keys(tmp_path, "node-000", force=True) == node
    after = snapshot(tmp_path)
    assert set(after) == set(before)
    assert all(after[name] != before[name] for name in before)
    assert [mode(p) for p in (ca.key, server.key, node.private)] == [0o600] * 3
    # The new server certificate is signed by the new CA.
    load_cert(server.cert).verify_directly_issued_by(load_cert(ca.cert))


def test_refuses_a_file_that_appears_after_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = certs._refuse_existing

    def check_then_race(paths: list[Path], *, force: bool) -> None:
        real(paths, force=force)
        paths[1].parent.mkdir(parents=True, exist_ok=True)
        paths[1].write_bytes(b"someone else's")

    monkeypatch.setattr(certs, "_refuse_existing", check_then_race)
    with pytest.raises(ConfigError, match=r"ca\.key already exists"):
        make_ca(tmp_path)
    assert snapshot(tmp_path) == {"ca.key": b"someone else's"}


def test_failure_half_way_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = certs._write_new
    calls = []

    def fail_on_second(path: Path, data: bytes, mode: int) -> None:
        calls.append(path)
        if len(calls) < 2:
            return real(path, data, mode)

        def no_space(fd: int) -> None:  # the data is written, then the disk is found full
            raise OSError(28, "No space left on device")

        with monkeypatch.context() as patch:
            patch.setattr(certs.os, "fsync", no_space)
            real(path, data, mode)

    monkeypatch.setattr(certs, "_write_new", fail_on_second)
    target = tmp_path / "new" / "certs"
    with pytest.raises(OSError, match="No space left"):
        make_ca(target)
    assert list(tmp_path.iterdir()) == []  # the directories this call made are gone too

    # When placing fails after the first file was moved into place, that one is removed as well.
    monkeypatch.setattr(certs, "_write_new", real)
    real_place = certs._place

    def place_once(tmp: Path, path: Path, *, force: bool) -> None:
        if path.name == "node.pub":
            raise OSError(5, "Input/output error")
        real_place(tmp, path, force=force)

    monkeypatch.setattr(certs, "_place", place_once)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "other.txt").write_text("kept")
    with pytest.raises(OSError, match="Input/output"):
        make_node_keys(tmp_path / "keys", "node")
    assert snapshot(tmp_path / "keys") == {"other.txt": b"kept"}


def test_force_failure_keeps_the_old_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_node_keys(tmp_path, "node")
    before = snapshot(tmp_path)
    real = certs._write_new

    def fail_on_public(path: Path, data: bytes, mode: int) -> None:
        if ".pub." in path.name:
            raise OSError(28, "No space left on device")
        real(path, data, mode)

    monkeypatch.setattr(certs, "_write_new", fail_on_public)
    with pytest.raises(OSError):
        make_node_keys(tmp_path, "node", force=True)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("hosts", "named"),
    [
        ([], "none"),
        ("localhost", "'localhost'"),
        (["localhost", ""], "''"),
        (["server example.org"], "'server example.org'"),
        (["localhost\n"], "'localhost\\\\n'"),
        ([" 10.0.0.5"], "' 10.0.0.5'"),
        (["server.example.org:9093"], "'server.example.org:9093'"),
        (["https://server.example.org"], "'https://server.example.org'"),
        (["localhost", "localhost"], "'localhost' twice"),
        (["localhost", None], "None"),
    ],
)
def test_bad_hosts_raise_config_error_naming_the_value(
    tmp_path: Path, pki: tuple[CertPaths, CertPaths], hosts: object, named: str
) -> None:
    ca, _ = pki
    with pytest.raises(ConfigError, match=r"expected .*got .*" + named) as info:
        make_server_certificate(tmp_path / "out", ca=ca, hosts=hosts)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_bad_ca_and_arguments_raise_config_error(tmp_path: Path, pki: tuple[CertPaths, CertPaths]) -> None:
    ca, server = pki
    with pytest.raises(ConfigError, match="readable CA certificate"):
        make_server_certificate(tmp_path, ca=CertPaths(tmp_path / "missing.crt", ca.key), hosts=["localhost"])
    with pytest.raises(ConfigError, match="expected a CA certificate"):
        make_server_certificate(tmp_path, ca=server, hosts=["localhost"])
    other = make_ca(tmp_path / "other")
    with pytest.raises(ConfigError, match="got a different key"):
        make_server_certificate(tmp_path, ca=CertPaths(ca.cert, other.key), hosts=["localhost"])
    with pytest.raises(ConfigError, match="got 0"):
        make_ca(tmp_path / "x", days=0)
    with pytest.raises(ConfigError, match="got ''"):
        make_ca(tmp_path / "x", common_name="")
    for name in ("", "../evil", "a b", ".hidden", "a/b"):
        with pytest.raises(ConfigError, match="node name"):
            make_node_keys(tmp_path / "x", name)
    assert not (tmp_path / "x").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]


# -- a real TLS handshake --------------------------------------------------------------------------------


@contextmanager
def tls_server(server: CertPaths) -> Iterator[tuple[int, list[BaseException]]]:
    """A one-connection-at-a-time TLS echo of b"hello" on 127.0.0.1, in a thread; yields (port, server errors)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server.cert, server.key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    errors: list[BaseException] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                conn.settimeout(10)
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"hello")
            except (OSError, ssl.SSLError) as err:
                errors.append(err)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], errors
    finally:
        stop.set()
        listener.close()
        thread.join(10)


def connect(port: int, cafile: Path, hostname: str) -> bytes:
    context = ssl.create_default_context(cafile=str(cafile))  # trusts only this CA, checks the host name
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        return tls.recv(5)


def test_tls_handshake_with_the_ca_and_not_with_another(pki: tuple[CertPaths, CertPaths], tmp_path: Path) -> None:
    ca, server = pki
    other = make_ca(tmp_path / "other")
    with tls_server(server) as (port, errors):
        assert connect(port, ca.cert, "127.0.0.1") == b"hello"
        assert connect(port, ca.cert, "localhost") == b"hello"
        assert errors == []
        with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
            connect(port, other.cert, "127.0.0.1")
        with pytest.raises(ssl.SSLCertVerificationError, match=r"mismatch|doesn't match"):
            connect(port, ca.cert, "other.example.org")


def test_grpc_accepts_the_certificate_as_flower_hands_it_over(pki: tuple[CertPaths, CertPaths], tmp_path: Path) -> None:
    """The SuperLink passes the PEM bytes of ca.crt, server.pem and server.key to gRPC (BoringSSL), not to ssl."""
    grpc = pytest.importorskip("grpc")
    from concurrent import futures

    ca, server = pki
    credentials = grpc.ssl_server_credentials(
        [(server.key.read_bytes(), server.cert.read_bytes())], root_certificates=ca.cert.read_bytes()
    )
    handler = grpc.method_handlers_generic_handler(
        "t", {"echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)}
    )
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = grpc_server.add_secure_port("127.0.0.1:0", credentials)
    grpc_server.start()
    try:
        for host in ("127.0.0.1", "localhost"):
            trusted = grpc.ssl_channel_credentials(root_certificates=ca.cert.read_bytes())
            with grpc.secure_channel(f"{host}:{port}", trusted) as channel:
                assert channel.unary_unary("/t/echo")(b"hi", timeout=10) == b"hi"
        other = make_ca(tmp_path / "other")
        untrusted = grpc.ssl_channel_credentials(root_certificates=other.cert.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", untrusted) as channel, pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/t/echo")(b"hi", timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        grpc_server.stop(0)


# -- node keys -------------------------------------------------------------------------------------------


def test_node_keys_are_p384_in_the_formats_flower_loads(tmp_path: Path) -> None:
    keys = make_node_keys(tmp_path / "keys", "node-000")
    assert keys == NodeKeyPaths(tmp_path / "keys" / "node-000.key", tmp_path / "keys" / "node-000.pub")
    assert keys.private.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert keys.public.read_text().startswith("ecdsa-sha2-nistp384 ")
    # flower-supernode --auth-supernode-private-key: load_ssh_private_key(bytes, None) -> EC private key
    private = serialization.load_ssh_private_key(keys.private.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP384R1)
    # flwr supernode register: load_ssh_public_key(bytes) -> EC public key on a NIST curve
    public = serialization.load_ssh_public_key(keys.public.read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP384R1)
    assert public == private.public_key()
    # Two nodes never share a key.
    assert make_node_keys(tmp_path / "keys", "node-001").public.read_bytes() != keys.public.read_bytes()


def test_installed_flower_still_loads_node_keys_with_these_loaders() -> None:
    spec = importlib.util.find_spec("flwr")  # finds the package without importing it (which imports TensorFlow)
    assert spec is not None and spec.submodule_search_locations
    root = Path(next(iter(spec.submodule_search_locations)))
    supernode = (root / "supernode" / "cli" / "flower_supernode.py").read_text()
    assert '"--auth-supernode-private-key"' in supernode
    assert "load_ssh_private_key(\n            Path(args.auth_supernode_private_key).read_bytes()" in supernode
    register = (root / "cli" / "supernode" / "register.py").read_text()
    assert "serialization.load_ssh_public_key(key_file.read())" in register
    config = (root / "cli" / "config_utils.py").read_text()
    for key in ('get("root-certificates")', '"address" not in federation_config', 'get("insecure")'):
        assert key in config


@pytest.mark.slow
def test_flower_itself_accepts_the_node_keys(tmp_path: Path) -> None:
    """Flower's own functions (importing them imports TensorFlow, hence slow)."""
    import argparse

    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes
    from flwr.supernode.cli.flower_supernode import _try_setup_client_authentication

    keys = make_node_keys(tmp_path, "node-000")
    pair = _try_setup_client_authentication(
        argparse.Namespace(auth_supernode_private_key=str(keys.private), auth_supernode_public_key=None)
    )
    assert pair is not None
    registered = try_load_public_key(keys.public)
    assert registered == public_key_to_bytes(pair[1])  # what the SuperLink compares


# -- federation snippet ----------------------------------------------------------------------------------


def test_federation_snippet_parses_to_flowers_keys(tmp_path: Path) -> None:
    ca = tmp_path / 'odd "dir" \\ name' / "ca.crt"
    text = federation_snippet(name="deployment", address="server.example.org:9093", ca=ca)
    assert text.startswith("[tool.flwr.federations.deployment]\n")
    parsed = tomllib.loads(text)
    assert parsed == {
        "tool": {
            "flwr": {
                "federations": {"deployment": {"address": "server.example.org:9093", "root-certificates": str(ca)}}
            }
        }
    }


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("server.example.org", "server.example.org:9093"),
        ("10.0.0.5", "10.0.0.5:9093"),
        ("10.0.0.5:9999", "10.0.0.5:9999"),
        ("::1", "[::1]:9093"),
        ("[::1]", "[::1]:9093"),
        ("[::1]:9093", "[::1]:9093"),
    ],
)
def test_federation_snippet_address(address: str, expected: str) -> None:
    parsed = tomllib.loads(federation_snippet(name="fed", address=address, ca=Path("/c/ca.crt")))
    assert parsed["tool"]["flwr"]["federations"]["fed"]["address"] == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "a.b", "address": "h", "ca": Path("c")}, "federation name"),
        ({"name": "", "address": "h", "ca": Path("c")}, "federation name"),
        ({"name": "f", "address": "", "ca": Path("c")}, "SuperLink address"),
        ({"name": "f", "address": "h:port", "ca": Path("c")}, "SuperLink address"),
        ({"name": "f", "address": "h 1:9093", "ca": Path("c")}, "SuperLink address"),
    ],
)
def test_federation_snippet_rejects_bad_input(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        federation_snippet(**kwargs)  # type: ignore[arg-type]
