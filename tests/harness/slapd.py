"""A private OpenLDAP server on loopback for sign-in tests.

``SlapdInstance(workdir).start()`` writes a slapd.conf (mdb backend, Debian's schema
files from /etc/ldap/schema), runs ``slapd -f <conf> -h ldap://127.0.0.1:<port>/`` in
the foreground as a child process, and loads entries with the real ``ldapadd``.
:func:`standard_directory` adds the people and groups the web tests use."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.harness.net import free_port, wait_for_port

SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
BASE_DN = "dc=example,dc=net"
ROOT_DN = f"cn=admin,{BASE_DN}"
ROOT_PW = "rootsecret"
SERVICE_DN = f"cn=aliasd-svc,ou=services,{BASE_DN}"
SERVICE_PW = "servicesecret"
ADMIN_GROUP_DN = f"cn=aliasd-admins,ou=groups,{BASE_DN}"


def _ldif_value(name: str, value: str) -> str:
    # LDIF needs base64 ("::") for non-ASCII or values starting with a special char.
    if not value.isascii() or value[:1] in (" ", ":", "<") or value.endswith(" "):
        return f"{name}:: {base64.b64encode(value.encode()).decode()}"
    return f"{name}: {value}"


@dataclass
class Person:
    uid: str
    password: str
    mail: str | None
    cn: str = ""

    @property
    def dn(self) -> str:
        from ldap3.utils.dn import escape_rdn

        return f"uid={escape_rdn(self.uid)},ou=people,{BASE_DN}"


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 (openssl CLI):
    returns (ca.pem, server.pem, server.key)."""
    ca_key, ca, key, csr, cert = (directory / n for n in
                                  ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=aliasd test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


class SlapdInstance:
    """``tls=True`` adds a certificate from a private CA (``ca_file``), StartTLS on
    ``uri`` and a second listener ``ldaps_uri``."""

    def __init__(self, workdir: str | os.PathLike, *, tls: bool = False) -> None:
        self.dir = Path(workdir)
        self.port = free_port()
        self.uri = f"ldap://127.0.0.1:{self.port}/"
        self.tls = tls
        self.ldaps_port = free_port() if tls else None
        self.ldaps_uri = f"ldaps://127.0.0.1:{self.ldaps_port}/" if tls else None
        self.ca_file: Path | None = None
        self.proc: subprocess.Popen | None = None

    def _write_config(self) -> Path:
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        schemas = "\n".join(
            f"include {SCHEMA_DIR / name}.schema"
            for name in ("core", "cosine", "nis", "inetorgperson")
        )
        tls = ""
        if self.tls:
            self.ca_file, cert, key = make_certificates(self.dir)
            tls = (f"TLSCACertificateFile {self.ca_file}\nTLSCertificateFile {cert}\n"
                   f"TLSCertificateKeyFile {key}\n")
        conf = self.dir / "slapd.conf"
        conf.write_text(
            f"""{schemas}
{tls}
modulepath {MODULE_DIR}
moduleload back_mdb
pidfile {self.dir / 'slapd.pid'}
argsfile {self.dir / 'slapd.args'}

database mdb
maxsize 104857600
suffix "{BASE_DN}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PW}
directory {data}
index objectClass eq
index uid eq
index member eq

access to attrs=userPassword
    by self read
    by anonymous auth
    by * none
access to *
    by * read
"""
        )
        return conf

    def start(self, timeout: float = 15.0) -> SlapdInstance:
        conf = self._write_config()
        # -d keeps slapd in the foreground as our child, so stop() can end it by pid.
        with open(self.dir / "slapd.log", "wb") as log:
            self.proc = subprocess.Popen(
                ["slapd", "-f", str(conf), "-h", " ".join(filter(None, [self.uri,
                                                                         self.ldaps_uri])),
                 "-d", "0"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port(self.port, timeout=timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(
                "slapd did not start: " + (self.dir / "slapd.log").read_text(errors="replace")
            ) from None
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def ldapadd(self, ldif: str) -> None:
        self._run_tool("ldapadd", input=ldif)

    def ldapmodify(self, ldif: str) -> None:
        self._run_tool("ldapmodify", input=ldif)

    def ldapdelete(self, dn: str) -> None:
        self._run_tool("ldapdelete", dn)

    def _run_tool(self, tool: str, *args: str, input: str | None = None) -> None:
        """The real OpenLDAP client tool, as the directory's root."""
        deadline = time.monotonic() + 10
        while True:
            proc = subprocess.run(
                [tool, "-x", "-H", self.uri, "-D", ROOT_DN, "-w", ROOT_PW, *args],
                input=input, capture_output=True, text=True,
            )
            if proc.returncode == 0:
                return
            # 81 = server not ready yet; anything else is a real error.
            if proc.returncode != 255 or time.monotonic() > deadline:
                raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr}")
            time.sleep(0.1)

    def set_member(self, group_dn: str, member_dn: str, *, member: bool) -> None:
        """Add ``member_dn`` to the groupOfNames ``group_dn``, or take it out."""
        change = "add" if member else "delete"
        self.ldapmodify(f"dn: {group_dn}\nchangetype: modify\n{change}: member\n"
                        f"member: {member_dn}\n")

    def add_person(self, person: Person) -> None:
        lines = [
            f"dn: {person.dn}" if person.dn.isascii() else _ldif_value("dn", person.dn),
            "objectClass: inetOrgPerson",
            _ldif_value("uid", person.uid),
            _ldif_value("cn", person.cn or person.uid),
            _ldif_value("sn", person.cn or person.uid),
            _ldif_value("userPassword", person.password),
        ]
        if person.mail:
            lines.append(_ldif_value("mail", person.mail))
        self.ldapadd("\n".join(lines) + "\n")


PEOPLE = {
    "alice": Person("alice", "alice-pw-1", "Alice@Corp.Example"),
    "bob": Person("bob", "bob-pw-1", "bob@corp.example"),
    "carol": Person("carol", "carol-pw-1", "carol@corp.example"),  # in the admin group
    "obrien": Person("o'brien", "obrien-pw-1", "obrien@corp.example"),
    "jorg": Person("jörg", "jörg-pw-1", "joerg@corp.example"),
    "star": Person("star*(x)", "star-pw-1", "star@corp.example"),
    "nomail": Person("nomail", "nomail-pw-1", None),
    "reversed": Person("\u202egnp.exe", "reversed-pw-1", "reversed@corp.example"),
}


def standard_directory(slapd: SlapdInstance) -> None:
    slapd.ldapadd(
        f"""dn: {BASE_DN}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,{BASE_DN}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{BASE_DN}
objectClass: organizationalUnit
ou: groups

dn: ou=services,{BASE_DN}
objectClass: organizationalUnit
ou: services

dn: {SERVICE_DN}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: aliasd-svc
userPassword: {SERVICE_PW}
"""
    )
    for person in PEOPLE.values():
        slapd.add_person(person)
    slapd.ldapadd(
        f"""dn: {ADMIN_GROUP_DN}
objectClass: groupOfNames
cn: aliasd-admins
member: {PEOPLE['carol'].dn}
"""
    )


def slapd_available() -> bool:
    return shutil.which("slapd") is not None and shutil.which("ldapadd") is not None
