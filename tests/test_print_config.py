"""``--print-config`` round-trips through ``--config``; secrets never print nor load back."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gridserve.config import ALL_SETTINGS, ConfigError, masked, resolve_settings
from gridserve.masking import mask_uri
from tests.test_cli import gridserve


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRIDSERVE_")}
    return subprocess.run(
        gridserve(*args),
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    "flags",
    [
        [],
        [
            "--storage",
            "mongodb://db.example/media?readPreference=nearest",
            "--bucket",
            "videos",
            "--port",
            "7000",
            "--cache-time",
            "60",
            "--max-upload-size",
            "2G",
            "--cors-origin",
            "*",
            "--processes",
            "2",
            "--file-cache-seconds",
            "2.5",
            "--no-ui",
            "--access-log",
            "/var/log/gridserve/access.log",
        ],
    ],
)
def test_print_config_loads_back_to_the_same_config(flags: list[str], tmp_path: Path) -> None:
    first = run("serve", *flags, "--print-config")
    assert first.returncode == 0, first.stderr
    config = tmp_path / "gridserve.toml"
    config.write_text(first.stdout)
    second = run("serve", "--config", str(config), "--print-config")
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    # Values in effect, defaults included: never a bare "# storage =".
    assert "\nstorage = " in first.stdout
    assert ("ui = false" if flags else "ui = true") in first.stdout
    if not flags:
        assert 'storage = "gridserve-data"' in first.stdout


def test_a_masked_secret_loaded_back_is_refused_naming_where_the_secret_goes(
    tmp_path: Path,
) -> None:
    secrets = {"GRIDSERVE_UPLOAD_TOKEN": "Tok-9f2", "GRIDSERVE_SIGNING_KEY": "Key-77a"}
    printed = run("serve", "--print-config", env=secrets)
    assert printed.returncode == 0, printed.stderr
    assert "Tok-9f2" not in printed.stdout and "Key-77a" not in printed.stdout
    config = tmp_path / "gridserve.toml"
    config.write_text(printed.stdout)
    # Before: the token became the literal "***", and "Bearer ***" could upload and delete.
    refused = run("serve", "--config", str(config), "--print-config")
    assert refused.returncode == 2
    assert "upload_token" in refused.stderr and "GRIDSERVE_UPLOAD_TOKEN" in refused.stderr
    assert "root-only" in refused.stderr and "Traceback" not in refused.stderr
    # The real secrets from the environment take the placeholders' place: accepted.
    accepted = run("serve", "--config", str(config), "--print-config", env=secrets)
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout == printed.stdout


def test_the_placeholder_is_refused_from_every_source() -> None:
    with pytest.raises(ConfigError, match=r"--upload-token.*GRIDSERVE_UPLOAD_TOKEN"):
        resolve_settings(ALL_SETTINGS, {"upload_token": "***"}, {}, None)
    with pytest.raises(ConfigError, match="GRIDSERVE_SIGNING_KEY"):
        resolve_settings(ALL_SETTINGS, {}, {"GRIDSERVE_SIGNING_KEY": " *** "}, None)
    with pytest.raises(ConfigError, match="signing_key"):  # one of two rotated keys
        resolve_settings(ALL_SETTINGS, {"signing_key": ["real-key", "***"]}, {}, None)


@pytest.mark.parametrize(
    ("uri", "secret", "kept"),
    [
        ("mongodb://u:Pw-1@h/db", "Pw-1", "mongodb://u:***@h/db"),
        (
            "mongodb://h/db?tls=true&tlsCertificateKeyFile=/k.pem"
            "&tlsCertificateKeyFilePassword=Pw-2",
            "Pw-2",
            "tlsCertificateKeyFile=/k.pem",
        ),
        (
            "mongodb://AKIA1@h/db?authMechanism=MONGODB-AWS"
            "&authMechanismProperties=AWS_SESSION_TOKEN:Tok-3",
            "Tok-3",
            "authMechanismProperties=AWS_SESSION_TOKEN:***",
        ),
        (
            "mongodb://h/db?authMechanismProperties=SERVICE_NAME%3Amongodb%2CAWS_SESSION_TOKEN%3ATok-4",
            "Tok-4",
            "SERVICE_NAME:mongodb",
        ),
        ("mongodb+srv://u:Pw-5@cluster.example/db?retryWrites=true", "Pw-5", "retryWrites=true"),
        ("https://AK:Sec-6@minio.example:9000", "Sec-6", "https://AK:***@minio.example:9000"),
        ("s3://bucket/p?aws_secret_access_key=Sec-7&region=x", "Sec-7", "region=x"),
        ("s3://bucket/p?X-Amz-Signature=Sig-8", "Sig-8", "X-Amz-Signature=***"),
    ],
)
def test_every_credential_in_a_uri_is_masked(uri: str, secret: str, kept: str) -> None:
    shown = mask_uri(uri)
    assert secret not in shown
    assert kept in shown


def test_print_config_masks_uri_options_and_the_s3_endpoint() -> None:
    values = resolve_settings(
        ALL_SETTINGS,
        {
            "storage": "mongodb://h/db?tlsCertificateKeyFilePassword=Pw-9",
            "s3_endpoint": "https://AK:Sec-10@minio.example",
        },
        {},
        None,
    )
    shown = masked(values)
    assert "Pw-9" not in shown["storage"] and "Sec-10" not in shown["s3_endpoint"]
