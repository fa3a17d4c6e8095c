"""A private Postfix instance for integration tests: the real downstream MTA.

It listens on a loopback port, relays nothing, and delivers every recipient of the test
domains into one Maildir (virtual delivery), so a test can read exactly what arrived.
Started with `postfix -c DIR start` as root; nothing of the system's Postfix is touched.
"""

from __future__ import annotations

import mailbox
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

POSTFIX = shutil.which("postfix", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", ""))
TEST_DOMAINS = [
    "example.org",
    "example.com",
    "example.net",
    "customer.example",
    "shop.example",
    "demo.example",
    "recipients.example",
]

MASTER_CF = """\
{port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A port nothing listens on, for a server a test starts later. Taken below the kernel's
    ephemeral range: a port from that range can be given to some outgoing connection (or a
    bind to port 0) between this check and the server's bind, and the server then fails with
    "Address already in use" (seen in CI)."""
    import random

    low, _ = _ephemeral_range()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # nothing free down there: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostfixInstance:
    def __init__(self, port: int | None = None, extra_main_cf: str = "") -> None:
        # Not under pytest's tmp_path: its parents are 0700 and Postfix's daemons must traverse.
        base = Path(tempfile.mkdtemp(prefix="gateway-postfix-"))
        if POSTFIX is None:
            raise RuntimeError("postfix is not installed (apt-get install postfix): run .ci/setup")
        self.base = base
        self.port = port or free_port()
        self.config_dir = base / "etc"
        self.maildir_path = base / "mail"
        self.log_file = base / "maillog"
        nobody = pwd.getpwnam("nobody")
        for d in (self.config_dir, base / "spool", base / "lib"):
            d.mkdir(parents=True, exist_ok=True)
        postfix_user = pwd.getpwnam("postfix")
        # Postfix daemons run as the postfix user: they must traverse the base and own data.
        os.chmod(base, 0o755)
        os.chown(base / "lib", postfix_user.pw_uid, postfix_user.pw_gid)
        self.maildir_path.mkdir(exist_ok=True)
        for sub in ("", "tmp", "new", "cur"):
            (self.maildir_path / sub).mkdir(exist_ok=True)
            os.chown(self.maildir_path / sub, nobody.pw_uid, nobody.pw_gid)
        (self.config_dir / "master.cf").write_text(MASTER_CF.format(port=f"127.0.0.1:{self.port}"))
        (self.config_dir / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {base / "spool"}
data_directory = {base / "lib"}
mail_owner = postfix
setgid_group = postdrop
myhostname = downstream.test
mydomain = downstream.test
myorigin = downstream.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
relayhost =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject
virtual_mailbox_domains = {", ".join(TEST_DOMAINS)}
virtual_mailbox_base = {base}
virtual_mailbox_maps = static:mail/
virtual_minimum_uid = 1
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}
maillog_file = {self.log_file}
maillog_file_prefixes = {base}
smtpd_banner = $myhostname ESMTP test downstream
biff = no
append_dot_mydomain = no
smtputf8_enable = no
message_size_limit = 52428800
virtual_mailbox_limit = 0
{extra_main_cf}
""")

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def start(self) -> PostfixInstance:
        self.postfix("check", check=False)
        result = self.postfix("start", check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"postfix start failed: {result.stdout}{result.stderr}{self.read_log()[-2000:]}"
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"postfix did not listen on {self.port}: {self.read_log()}")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def clear(self) -> None:
        for sub in ("new", "cur"):
            for f in (self.maildir_path / sub).iterdir():
                f.unlink()

    def stop(self) -> None:
        self.postfix("stop", check=False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    time.sleep(0.1)
            except OSError:
                return

    def read_log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def messages(self) -> list[bytes]:
        box = mailbox.Maildir(str(self.maildir_path), create=False)
        return [box.get_bytes(key) for key in box.keys()]

    def wait_for_messages(self, count: int, timeout: float = 20.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages()
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(
            f"expected {count} delivered messages, found {len(self.messages())}"
            f"\n--- maillog ---\n{self.read_log()[-3000:]}"
        )
