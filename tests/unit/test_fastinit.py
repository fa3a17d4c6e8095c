"""aiosmtpd set up from the per-class caches finds exactly the members its own introspection
finds (the auth mechanisms, handler hooks, SMTP commands and EHLO hook style)."""

from __future__ import annotations

import inspect

import gateway.transports.smtp  # noqa: F401 - installs the cached introspection
from gateway.transports.smtp import SubmissionHandler, SubmissionSMTP


def expected_tables(protocol, handler):
    auth = {
        getattr(f, "__auth_mechanism_name__", n.replace("auth_", "").replace("__", "-"))
        for obj in (protocol, handler)
        for n, f in inspect.getmembers(obj)
        if n.startswith("auth_")
    }
    hooks = {m.replace("handle_", "") for m in dir(handler) if m.startswith("handle_")}
    commands = {m.replace("smtp_", "") for m in dir(protocol) if m.startswith("smtp_")}
    return auth, hooks, commands


def test_cached_introspection_finds_the_same_members(tmp_path):
    from tests.support.gateway import RunningGateway, base_config, write_config

    gw = RunningGateway(write_config(tmp_path, base_config(tmp_path, 25)))
    try:
        handler = SubmissionHandler(gw.server.state)
        listener = gw.config.listeners[0]

        async def build():
            return SubmissionSMTP(handler, state=gw.server.state, listener=listener, tls_context=None)

        protocol = gw.call(build())
        auth, hooks, commands = expected_tables(protocol, handler)
        assert set(protocol._auth_methods) == auth == {"LOGIN", "PLAIN"}
        assert set(protocol._handle_hooks) == hooks
        assert {"MAIL", "RCPT", "DATA"} <= hooks
        assert set(protocol._smtp_methods) == commands
        assert protocol._auth_methods["PLAIN"].is_builtin
    finally:
        gw.stop()
