"""Credentials never show: not in errors on stderr, not in the training log, not in ``repr(Settings)``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainwire.config import Secret, Settings, mask_secrets
from trainwire.errors import ConfigError

PASSWORD = "hunter2-Zq9"


def env_with(tmp_path: Path, **variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINWIRE_")}
    return {**env, "TRAINWIRE_DATA_DIR": str(tmp_path / "data"), **variables}


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"clickhouse://u:{PASSWORD}@host:9000/db", "clickhouse://u:****@host:9000/db"),
        (f"'https://default:{PASSWORD}@h:8443/x' is bad", "'https://default:****@h:8443/x' is bad"),
        (f"http://u:p@{PASSWORD}@h/db", "http://u:****@h/db"),  # an @ in the password
        (f"https://h:8443/?user=a&password={PASSWORD}&x=1", "https://h:8443/?user=a&password=****&x=1"),
        ("http://host:8123/db and kafka_sasl_password=None", "http://host:8123/db and kafka_sasl_password=None"),
    ],
)
def test_mask_secrets(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked


def test_repr_of_settings_shows_no_credential() -> None:
    settings = Settings(
        clickhouse=f"https://u:{PASSWORD}@ch.example.com:8443/db",
        kafka="broker:9096",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="trainer",
        kafka_sasl_password=Secret(PASSWORD),
    )
    text = repr(settings)
    assert PASSWORD not in text and PASSWORD not in str(settings)
    assert "https://u:****@ch.example.com:8443/db" in text and "Secret('****')" in text


def test_a_url_of_another_scheme_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigError) as info:
        Settings(clickhouse=f"clickhouse://u:{PASSWORD}@host:9000/db")
    assert PASSWORD not in str(info.value)
    assert "clickhouse://u:****@host:9000/db" in str(info.value)


def test_the_command_prints_the_error_without_the_password(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trainwire.cli", "sql", "SELECT 1"],
        capture_output=True,
        text=True,
        env=env_with(tmp_path, TRAINWIRE_CLICKHOUSE=f"clickhouse://u:{PASSWORD}@host:9000/db"),
        timeout=60,
    )
    assert done.returncode == 2
    assert PASSWORD not in done.stdout + done.stderr
    assert "clickhouse://u:****@host:9000/db" in done.stderr


LOGGING_TRAINER = """
import logging
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from trainwire.producers.api import log_interaction
print(log_interaction("2+2?", "4", reward=1.0))
"""


def test_log_interaction_warns_without_the_password(tmp_path: Path) -> None:
    """A training script with a bad TRAINWIRE_CLICKHOUSE: the warning in its log names the URL, masked."""
    done = subprocess.run(
        [sys.executable, "-c", LOGGING_TRAINER],
        capture_output=True,
        text=True,
        env=env_with(tmp_path, TRAINWIRE_CLICKHOUSE=f"clickhouse://u:{PASSWORD}@host:9000/db"),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"
    assert "log_interaction failed" in done.stderr and "clickhouse://u:****@host:9000/db" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr
