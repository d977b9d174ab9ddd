"""Throwaway certificates made at run time (tests, benchmarks) with the openssl CLI: a CA,
certificates it signs (for 127.0.0.1 and localhost, or a client's user name), and a second,
unrelated CA."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("the TLS tests need the openssl command (Debian package openssl)")
    subprocess.run([exe, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class TestCA:
    """A certificate authority in ``directory``; ``issue`` signs leaf certificates."""

    __test__ = False

    def __init__(self, directory: Path, name: str = "pyproxy test CA") -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.name = name.replace(" ", "_")
        self.cert = directory / f"{self.name}.crt"
        self.key = directory / f"{self.name}.key"
        self._serial = 1000
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-days", "3", "-subj", f"/CN={name}", "-keyout", str(self.key),
                 "-out", str(self.cert), cwd=directory)  # fmt: skip

    def issue(
        self, common_name: str, *, hosts: tuple[str, ...] = (), serial: int | None = None,
        days: int = 3, stem: str | None = None,
    ) -> CertPair:  # fmt: skip
        """A certificate for ``common_name`` (SANs: ``hosts``), its key next to it."""
        self._serial += 1
        serial = serial if serial is not None else self._serial
        stem = stem or f"{common_name}-{serial}"
        key, csr, crt = (self.dir / f"{stem}.{ext}" for ext in ("key", "csr", "crt"))
        ext_file = self.dir / f"{stem}.ext"
        sans = ",".join(
            (f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}") for h in hosts
        )
        ext_file.write_text(f"subjectAltName={sans}\n" if sans else "basicConstraints=CA:FALSE\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-subj", f"/CN={common_name}", "-keyout", str(key), "-out", str(csr),
                 cwd=self.dir)  # fmt: skip
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                 "-set_serial", str(serial), "-days", str(days), "-extfile", str(ext_file),
                 "-out", str(crt), cwd=self.dir)  # fmt: skip
        os.chmod(key, 0o600)
        return CertPair(crt, key)

    def server_pair(self, serial: int | None = None, stem: str | None = None) -> CertPair:
        return self.issue("localhost", hosts=("localhost", "127.0.0.1"), serial=serial, stem=stem)


def give_to_postgres(*paths: Path) -> None:
    """PostgreSQL refuses a key file not owned by the user it runs as (postgres, when root)."""
    if os.geteuid() != 0:
        return
    import pwd

    pw = pwd.getpwnam("postgres")
    for path in paths:
        os.chown(path, pw.pw_uid, pw.pw_gid)
        os.chown(path.parent, pw.pw_uid, pw.pw_gid)
