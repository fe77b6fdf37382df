"""Security material for a multi-machine Flower 1.23 deployment: a CA, the SuperLink's TLS certificate, node keys.

What each file is for and which process reads it::

    ca.crt       the CA certificate (PEM). Every party that connects to the SuperLink trusts it:
                   flower-supernode --root-certificates ca.crt ...
                   `flwr run` / `flwr supernode register`: root-certificates = "ca.crt" in the federation
                 and the SuperLink names it too: flower-superlink --ssl-ca-certfile ca.crt
    ca.key       the CA's private key (PEM PKCS#8, 0600). Only signs server certificates; no Flower process
                 reads it, keep it off the server (offline, with whoever makes certificates).
    server.pem   the SuperLink's certificate (PEM), signed by ca.crt, SubjectAlternativeName = every host name
                 and IP address clients use to reach it:  flower-superlink --ssl-certfile server.pem
    server.key   its private key (PEM PKCS#8, 0600), server host only:  flower-superlink --ssl-keyfile server.key
    NAME.key     a SuperNode's authentication key (ECDSA P-384, OpenSSH private key format, 0600), stays on that
                 client host:  flower-supernode --auth-supernode-private-key NAME.key
    NAME.pub     its public key (one OpenSSH line, ``ecdsa-sha2-nistp384 AAAA...``), registered with the
                 SuperLink (started with --enable-supernode-auth):  flwr supernode register NAME.pub . FEDERATION

The node key formats are the ones Flower 1.23 parses (checked in the installed flwr 1.23.0 source):

- ``flwr/supernode/cli/flower_supernode.py:218`` (``_try_setup_client_authentication``) reads the file given to
  ``--auth-supernode-private-key`` with ``cryptography``'s ``load_ssh_private_key(data, None)`` and requires an
  ``EllipticCurvePrivateKey`` (line 222). That loader accepts only the OpenSSH container
  (``-----BEGIN OPENSSH PRIVATE KEY-----``), unencrypted; a PEM PKCS#8 key (``BEGIN PRIVATE KEY``) is refused
  ("Unable to parse the private key file."). So ``NAME.key`` is OpenSSH format, not PKCS#8.
- ``flwr/cli/supernode/register.py:169`` (``try_load_public_key``) reads the ``flwr supernode register`` file with
  ``serialization.load_ssh_public_key`` and requires an EC key on a NIST curve (lines 171-178,
  ``uses_nist_ec_curve``). So ``NAME.pub`` is an OpenSSH public key line (what ``ssh-keygen -t ecdsa -b 384``
  writes). The SuperLink compares the node's public key (derived from the private key) with the registered one.

Federation keys (``flwr/cli/config_utils.py``): a federation is ``[tool.flwr.federations.NAME]`` in the app's
pyproject.toml; ``flwr`` reads ``address`` (line 231), ``root-certificates`` (line 203, a path read as
``app / root_certificates``, so relative paths are relative to the app directory; line 215) and ``insecure``
(line 243, a boolean, default false = TLS). :func:`federation_snippet` writes the first two.

The SuperLink's certificate and key are handed to gRPC as bytes (``flwr/common/args.py:133``), which reads PEM;
the certificates here use ECDSA P-384 keys and SHA-384 signatures.

Writing: every file is written complete or not at all. Private keys are created with ``os.open(..., 0o600)``
(never readable by others, not even while being written), certificates and public keys end up 0644. Existing
files are never overwritten unless ``force=True`` (a :class:`~fedmodel.errors.ConfigError` names the file); when
anything fails half-way, what this call wrote so far is removed again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import ipaddress
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedmodel.errors import ConfigError

__all__ = [
    "CONTROL_API_PORT",
    "CertPaths",
    "NodeKeyPaths",
    "federation_snippet",
    "make_ca",
    "make_node_keys",
    "make_server_certificate",
]

CONTROL_API_PORT = 9093  # flower-superlink's Control API (what `flwr run` connects to)
PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
MAX_DAYS = 36500
CLOCK_SKEW = dt.timedelta(minutes=5)  # certificates are valid from a little before now: hosts' clocks differ
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FEDERATION = re.compile(r"[A-Za-z0-9_-]+")  # a bare TOML key, what `flwr run . NAME` can name


@dataclass(frozen=True)
class CertPaths:
    """A certificate (PEM) and its private key (PEM PKCS#8, mode 0600)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class NodeKeyPaths:
    """A SuperNode's key pair: ``private`` (OpenSSH private key, 0600) and ``public`` (OpenSSH public key line)."""

    private: Path
    public: Path


# -- public API ---------------------------------------------------------------------------------------


def make_ca(directory: Path, *, common_name: str = "fedmodel CA", days: int = 365, force: bool = False) -> CertPaths:
    """A self-signed CA (ECDSA P-384): ``directory/ca.crt`` (0644) and ``directory/ca.key`` (0600)."""
    directory = Path(directory)
    _check_common_name(common_name)
    _check_days(days)
    paths = CertPaths(cert=directory / "ca.crt", key=directory / "ca.key")
    _refuse_existing([paths.cert, paths.key], force=force)

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    _write_files(
        directory,
        [(paths.cert, _cert_pem(cert), PUBLIC_MODE), (paths.key, _key_pem(key), PRIVATE_MODE)],
        force=force,
    )
    return paths


def make_server_certificate(
    directory: Path, *, ca: CertPaths, hosts: Sequence[str], days: int = 365, force: bool = False
) -> CertPaths:
    """The SuperLink's certificate, signed by ``ca``: ``directory/server.pem`` (0644), ``directory/server.key`` (0600).

    Every entry of ``hosts`` goes into the SubjectAlternativeName, an IP address (``10.0.0.5``, ``::1``) as an
    IPAddress entry and anything else as a DNSName; clients must connect with one of these names. The
    certificate is for TLS servers only (ExtendedKeyUsage serverAuth) and ends no later than the CA does.
    """
    directory = Path(directory)
    san = _subject_alt_names(hosts)
    _check_days(days)
    paths = CertPaths(cert=directory / "server.pem", key=directory / "server.key")
    _refuse_existing([paths.cert, paths.key], force=force)
    ca_cert, ca_key = _load_ca(ca)

    now = dt.datetime.now(dt.UTC)
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    if not_after <= now:
        raise ConfigError(
            f"expected a CA that is still valid, got {ca.cert} which expired {ca_cert.not_valid_after_utc:%Y-%m-%d}; "
            "make a new one with make_ca in a new directory"
        )
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedmodel SuperLink")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - CLOCK_SKEW, ca_cert.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_identifier(ca_cert), critical=False)
        .sign(ca_key, _signature_hash(ca_key))
    )
    _write_files(
        directory,
        [(paths.cert, _cert_pem(cert), PUBLIC_MODE), (paths.key, _key_pem(key), PRIVATE_MODE)],
        force=force,
    )
    return paths


def make_node_keys(directory: Path, name: str, *, force: bool = False) -> NodeKeyPaths:
    """An ECDSA P-384 key pair for SuperNode authentication: ``directory/NAME.key`` and ``directory/NAME.pub``.

    ``NAME.key`` is an unencrypted OpenSSH private key (0600), what ``flower-supernode
    --auth-supernode-private-key`` loads; ``NAME.pub`` is the OpenSSH public key line (0644) that
    ``flwr supernode register`` loads. See the module docstring for where in Flower 1.23 these formats are read.
    """
    directory = Path(directory)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"expected a node name of letters, digits, '.', '_' and '-' (not starting with '.' or '-'), got {name!r}"
        )
    paths = NodeKeyPaths(private=directory / f"{name}.key", public=directory / f"{name}.pub")
    _refuse_existing([paths.private, paths.public], force=force)

    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write_files(
        directory,
        [(paths.private, private, PRIVATE_MODE), (paths.public, public + f" {name}\n".encode(), PUBLIC_MODE)],
        force=force,
    )
    return paths


def federation_snippet(*, name: str, address: str, ca: Path) -> str:
    """The ``[tool.flwr.federations.NAME]`` table to paste into the pyproject.toml of the app you ``flwr run``.

    ``address`` is the SuperLink's Control API, ``host:port``; a bare host name or IP gets port 9093. ``ca`` is
    the CA certificate that signed the SuperLink's certificate; Flower resolves a relative path against the app
    directory, so pass an absolute one unless the app directory is where it is relative to.
    """
    if not isinstance(name, str) or not _FEDERATION.fullmatch(name):
        raise ConfigError(f"expected a federation name of letters, digits, '_' and '-', got {name!r}")
    return (
        f"[tool.flwr.federations.{name}]\n"
        f"address = {_toml_string(_control_address(address))}\n"
        f"root-certificates = {_toml_string(str(ca))}\n"
    )


# -- validation --------------------------------------------------------------------------------------


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ConfigError(f"expected days as a whole number from 1 to {MAX_DAYS}, got {days!r}")


def _check_common_name(common_name: str) -> None:
    if not isinstance(common_name, str) or not common_name.strip() or len(common_name) > 64:
        raise ConfigError(f"expected a CA common name of 1 to 64 characters, got {common_name!r}")


def _subject_alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """One SubjectAlternativeName entry per host: IPAddress for an IP address, DNSName otherwise."""
    if isinstance(hosts, str | bytes) or not isinstance(hosts, Sequence):
        raise ConfigError(f"expected a list of host names or IP addresses, got {hosts!r}")
    if not hosts:
        raise ConfigError("expected at least one host name or IP address for the server certificate, got none")
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in hosts:
        if not isinstance(host, str) or not host:
            raise ConfigError(f"expected a non-empty host name or IP address, got {host!r} in {list(hosts)!r}")
        if any(ch.isspace() for ch in host):
            raise ConfigError(f"expected a host name or IP address without whitespace, got {host!r}")
        if host in seen:
            raise ConfigError(f"expected every host once, got {host!r} twice in {list(hosts)!r}")
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not host.isascii():
            raise ConfigError(f"expected an ASCII host name (IDNA/punycode, xn--...), got {host!r}")
        if ":" in host or "/" in host:
            raise ConfigError(f"expected a host name or IP address without port, scheme or path, got {host!r}")
        names.append(x509.DNSName(host))
    return names


def _control_address(address: str) -> str:
    """``host:port`` for the federation; a bare host or IP (IPv6 in brackets or not) gets the Control API port."""
    if not isinstance(address, str) or not address or any(ch.isspace() for ch in address):
        raise ConfigError(f"expected the SuperLink address as host or host:port, got {address!r}")
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None:
        return f"[{ip}]:{CONTROL_API_PORT}" if ip.version == 6 else f"{ip}:{CONTROL_API_PORT}"
    host, sep, port = address.rpartition(":")
    if not sep:
        return f"{address}:{CONTROL_API_PORT}"
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or (":" in host and not host.startswith("[")):
        raise ConfigError(f"expected the SuperLink address as host:port (IPv6 as [addr]:port), got {address!r}")
    return address


def _toml_string(value: str) -> str:
    """A TOML basic string."""
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


# -- certificates --------------------------------------------------------------------------------------


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_identifier(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | hashes.SHA384 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _load_ca(ca: CertPaths) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    """The CA's certificate and key, checked to be a CA and to belong together."""
    try:
        cert = x509.load_pem_x509_certificate(Path(ca.cert).read_bytes())
    except OSError as err:
        raise ConfigError(f"expected a readable CA certificate at {ca.cert}, got {err.strerror or err}") from err
    except ValueError as err:
        raise ConfigError(f"expected a PEM CA certificate in {ca.cert}, got something else ({err})") from err
    try:
        key = serialization.load_pem_private_key(Path(ca.key).read_bytes(), password=None)
    except OSError as err:
        raise ConfigError(f"expected a readable CA key at {ca.key}, got {err.strerror or err}") from err
    except (ValueError, TypeError) as err:
        raise ConfigError(f"expected an unencrypted PEM CA key in {ca.key}, got something else ({err})") from err
    if not isinstance(
        key,
        ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey,
    ):
        raise ConfigError(f"expected an EC, RSA or Ed25519/Ed448 CA key in {ca.key}, got {type(key).__name__}")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ConfigError(f"expected a CA certificate (BasicConstraints CA=TRUE) in {ca.cert}, got a leaf certificate")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, public) != cert.public_key().public_bytes(
        serialization.Encoding.DER, public
    ):
        raise ConfigError(f"expected the key of the CA certificate {ca.cert} in {ca.key}, got a different key")
    return cert, key


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# -- writing -------------------------------------------------------------------------------------------


def _refuse_existing(paths: Sequence[Path], *, force: bool) -> None:
    for path in paths:
        if path.is_symlink() or path.exists():
            if not force:
                raise ConfigError(
                    f"{path} already exists; not overwriting it (use a new directory, or force=True / --force "
                    "to replace it)"
                )
            if path.is_dir():
                raise ConfigError(f"expected {path} to be a file to replace, got a directory")


def _make_directory(directory: Path) -> list[Path]:
    """Create ``directory`` and missing parents; returns the ones created, deepest first."""
    created: list[Path] = []
    probe = directory
    while not probe.exists() and not probe.is_symlink():
        created.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for path in reversed(created):
        try:
            path.mkdir()
        except FileExistsError:
            created.remove(path)
    if not directory.is_dir():
        raise ConfigError(f"expected {directory} to be a directory, got a file")
    return created


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (which must not exist) with permissions ``mode`` from the start, write ``data``, fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        try:
            os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _place(tmp: Path, path: Path, *, force: bool) -> None:
    """Move the finished ``tmp`` to ``path``: replacing it with ``force``, otherwise only if it does not exist."""
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if ``path`` exists (also if it appeared since the check): never overwrites
    except FileExistsError:
        raise ConfigError(
            f"{path} already exists; not overwriting it (use a new directory, or force=True / --force to replace it)"
        ) from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        if path.exists() or path.is_symlink():  # no hard links on this file system: check, then rename
            raise ConfigError(
                f"{path} already exists; not overwriting it (use a new directory, or force=True / --force "
                "to replace it)"
            ) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_files(directory: Path, files: Sequence[tuple[Path, bytes, int]], *, force: bool) -> None:
    """Write every ``(path, data, mode)`` completely, or none: on any failure what this call wrote is removed.

    Each file is first written to a temp file in the same directory (created with its final mode), then all
    of them are moved into place.
    """
    created = _make_directory(directory)
    token = secrets.token_hex(4)
    temps: list[Path] = []
    placed: list[Path] = []
    try:
        for path, data, mode in files:
            tmp = path.with_name(f".{path.name}.{token}.tmp")
            _write_new(tmp, data, mode)  # removes its own file if it fails
            temps.append(tmp)
        for tmp, (path, _data, _mode) in zip(temps, files, strict=True):
            _place(tmp, path, force=force)
            placed.append(path)
        _fsync_directory(directory)
    except BaseException:
        for path in [*temps, *placed]:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        for path in created:  # deepest first; only directories this call made, and only if empty
            try:
                path.rmdir()
            except OSError:
                break
        raise
