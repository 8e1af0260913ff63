"""Settings from arguments and the environment; CLI flags; secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from trainwire.cli import main
from trainwire.config import Settings
from trainwire.errors import ConfigError


def test_environment_and_overrides() -> None:
    env = {"TRAINWIRE_KAFKA": "k:9092", "TRAINWIRE_DATA_DIR": "/tmp/x", "TRAINWIRE_KAFKA_SASL_PASSWORD": "hunter2"}
    settings = Settings.from_env(env, data_dir="/tmp/y")
    assert settings.kafka == "k:9092" and settings.data_dir == Path("/tmp/y")
    assert not settings.embedded_bus and settings.embedded_store
    assert "hunter2" not in repr(settings)
    assert Settings.from_env({}).embedded_bus


def test_security_settings_pass_through() -> None:
    settings = Settings.from_env(
        {
            "TRAINWIRE_KAFKA": "k:9093",
            "TRAINWIRE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "TRAINWIRE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "TRAINWIRE_KAFKA_SASL_USERNAME": "u",
            "TRAINWIRE_KAFKA_SASL_PASSWORD": "p",
        }
    )
    options = settings.kafka_client_options()
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "u",
        "p",
    )


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        ({"clickhouse": "localhost:8123"}, "clickhouse"),
        ({"topic_prefix": "a b"}, "topic_prefix"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_settings_name_the_setting(values, setting) -> None:
    with pytest.raises(ConfigError, match=f"^{setting}: "):
        Settings.from_env({}, **values)


def test_cli_help_explains_every_subcommand() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name, command in main.commands.items():
        assert name in result.output
        assert command.help, name
        sub = CliRunner().invoke(main, [name, "--help"])
        assert sub.exit_code == 0 and "Usage:" in sub.output


def test_cli_flags_win_over_environment(tmp_path: Path) -> None:
    result = CliRunner(env={"TRAINWIRE_CLICKHOUSE": "nonsense"}).invoke(
        main, ["--clickhouse", "ftp://x", "db", "migrate"]
    )
    assert result.exit_code == 2 and "clickhouse: 'ftp://x' is not" in result.output
    ok = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "db", "migrate"])
    assert ok.exit_code == 0 and "applied: 0001_events" in ok.output
    again = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "db", "migrate"])
    assert "schema up to date" in again.output
