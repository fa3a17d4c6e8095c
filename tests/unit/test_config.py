"""Config parsing: what ops write in YAML is what the gateway uses, or a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.config import ConfigError, load_config, parse_config


def parse(text: str):
    return parse_config(yaml.safe_load(text), base_dir=Path("/etc/gw"), source=Path("c.yaml"))


def test_unquoted_off_is_mode_off():
    assert parse("policies: [{name: imprint, mode: off}]").policies[0].mode == "off"


def test_relative_paths_resolve_against_the_config_directory():
    config = parse("store: {url: 'sqlite:///var/g.db'}\nmail_id: {key_file: var/k}")
    assert config.store_url() == "sqlite:////etc/gw/var/g.db"
    assert config.path(config.mail_id.key_file) == Path("/etc/gw/var/k")
    assert parse("store: {url: 'sqlite:////abs/g.db'}").store_url() == "sqlite:////abs/g.db"


@pytest.mark.parametrize(
    "text,message",
    [
        ("limits: {max_recipients: 0}", "limits.max_recipients"),
        ("listeners: [{kind: smtp, port: 25}]", "listeners.0.kind"),
        ("dkim: {algorithms: [rsa-sha1]}", "dkim.algorithms.0"),
        ("policies: [{name: a}, {name: a}]", "listed twice"),
        ("feedback: {sender_id: x}", "feedback.sender_id"),
        ("- just\n- a list", "top level must be a mapping"),
    ],
)
def test_errors_name_the_key(text, message):
    with pytest.raises(ConfigError) as excinfo:
        parse(text)
    assert message in str(excinfo.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
