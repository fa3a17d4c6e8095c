"""A private Postfix with the gateway as its milter, and a private Dovecot as its SASL backend.

This is the deployment the milter mode is for: customers authenticate to Postfix (SMTP AUTH,
checked by Dovecot's auth service, the usual Postfix SASL setup), Postfix hands every SMTP
event to the gateway's milter listener, and the login reaches the gateway in the
`{auth_authen}` macro. Delivery goes to the Maildir of `PostfixInstance`.

Needs the Debian packages postfix and dovecot-core. Dovecot runs in the foreground as a child
of the test process, with its own config, sockets and state under a temporary directory; it
only serves the auth protocol, on a loopback port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.postfix import PostfixInstance, free_port

DOVECOT = shutil.which("dovecot", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", ""))

DOVECOT_CONF = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  inet_listener auth-postfix {{
    address = 127.0.0.1
    port = {port}
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  chroot =
}}
"""


def _wait_for_port(port: int, what: str, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"{what} did not listen on {port}\n{text}")


class DovecotSasl:
    """Dovecot's auth service only, for Postfix's `smtpd_sasl_type = dovecot`."""

    def __init__(self, users: dict[str, str]) -> None:
        if DOVECOT is None:
            raise RuntimeError("dovecot is not installed (apt-get install dovecot-core): run .ci/setup test")
        self.base = Path(tempfile.mkdtemp(prefix="gateway-dovecot-"))
        os.chmod(self.base, 0o755)  # the auth process runs as the dovecot user
        self.port = free_port()
        for sub in ("run", "state"):
            (self.base / sub).mkdir()
        users_file = self.base / "users"
        users_file.write_text("".join(f"{name}:{{PLAIN}}{password}\n" for name, password in users.items()))
        os.chmod(users_file, 0o644)
        self.config = self.base / "dovecot.conf"
        self.config.write_text(DOVECOT_CONF.format(base=self.base, port=self.port))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DovecotSasl:
        assert DOVECOT is not None
        with open(self.base / "dovecot.log", "ab") as early_log:  # errors before log_path
            self.process = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=early_log
            )
        try:
            _wait_for_port(self.port, "dovecot auth", self.base / "dovecot.log")
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def milter_main_cf(milter_port: int, sasl_port: int) -> str:
    """The main.cf lines of the README's milter setup, with test timeouts and SASL backend."""
    return f"""\
smtpd_milters = inet:127.0.0.1:{milter_port}
milter_default_action = tempfail
milter_protocol = 6
milter_connect_timeout = 5s
milter_command_timeout = 30s
milter_content_timeout = 60s
local_header_rewrite_clients =
disable_mime_output_conversion = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{sasl_port}
smtpd_sasl_security_options = noanonymous
"""


class MilterPostfix(PostfixInstance):
    """PostfixInstance with `smtpd_milters` pointing at `milter_port` and Dovecot SASL."""

    def __init__(self, milter_port: int, users: dict[str, str]) -> None:
        self.milter_port = milter_port
        self.sasl = DovecotSasl(users).start()
        try:
            super().__init__(extra_main_cf=milter_main_cf(milter_port, self.sasl.port))
        except Exception:
            self.sasl.cleanup()
            raise

    def cleanup(self) -> None:
        try:
            super().cleanup()
        finally:
            self.sasl.cleanup()
