"""Settings: flag > environment > config file > default, conversion, masking (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridserve.config import (
    ALL_SETTINGS,
    ConfigError,
    masked,
    parse_bool,
    parse_duration,
    parse_size,
    render_toml,
    resolve_settings,
)


def resolve(
    flags: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    file_text: str | None = None,
    tmp_path: Path | None = None,
) -> dict[str, object]:
    path = None
    if file_text is not None:
        assert tmp_path is not None
        path = tmp_path / "gridserve.toml"
        path.write_text(file_text)
    return resolve_settings(ALL_SETTINGS, flags or {}, env or {}, path)


def test_defaults() -> None:
    values = resolve()
    assert values["port"] == 8888 and values["address"] == "127.0.0.1"
    assert values["prefix"] == "/fs" and values["processes"] == 1
    assert values["require_signed_reads"] is False and values["upload_token"] is None


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    text = '[gridserve]\nport = 7000\ncache-time = 60\nbucket = "media"\n'
    env = {"GRIDSERVE_PORT": "7100", "GRIDSERVE_CACHE_TIME": "90"}
    values = resolve({"port": "7200"}, env, text, tmp_path)
    assert values["port"] == 7200  # flag
    assert values["cache_time"] == 90  # environment over file
    assert values["bucket"] == "media"  # file over default
    assert values["prefix"] == "/fs"  # default


def test_top_level_file_keys_and_types(tmp_path: Path) -> None:
    values = resolve(None, None, 'require_signed_reads = true\nmax_upload_size = "2G"\n', tmp_path)
    assert values["require_signed_reads"] is True
    assert values["max_upload_size"] == 2 * 1024**3


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"port": "http"}, {}, "--port"),
        ({"port": "70000"}, {}, "--port"),
        ({}, {"GRIDSERVE_PROCESSES": "-1"}, "GRIDSERVE_PROCESSES"),
        ({}, {"GRIDSERVE_READ_PREFERENCE": "fastest"}, "GRIDSERVE_READ_PREFERENCE"),
        ({"max_upload_size": "lots"}, {}, "--max-upload-size"),
    ],
)
def test_bad_values_name_their_source(
    flags: dict[str, str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(flags, env)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        resolve(None, None, 'colour = "blue"\n', tmp_path)
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve(None, None, "port = = 1\n", tmp_path)
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_settings(ALL_SETTINGS, {}, {}, tmp_path / "missing.toml")


def test_sizes_and_bools() -> None:
    assert parse_size("100") == 100
    assert parse_size("512K") == 512 * 1024
    assert parse_size("1GiB") == 1024**3
    with pytest.raises(ValueError):
        parse_size("1.5G")
    assert parse_bool("Yes") is True and parse_bool("0") is False
    with pytest.raises(ValueError):
        parse_bool("maybe")


def test_masking_and_rendering() -> None:
    values = resolve(
        {"upload_token": "Zq9-token", "storage": "mongodb://u:Pw-77@db.example/media"},
        {"GRIDSERVE_SIGNING_KEY": "K3y-signing"},
    )
    shown = masked(values)
    assert shown["upload_token"] == "***" and shown["signing_key"] == "***"
    assert shown["storage"] == "mongodb://u:***@db.example/media"
    text = render_toml(shown)
    assert text.startswith("[gridserve]\n")
    assert 'upload_token = "***"' in text and "port = 8888" in text
    assert "Zq9" not in text and "Pw-77" not in text and "K3y" not in text


def test_chunk_cache_size(tmp_path: Path) -> None:
    assert resolve()["chunk_cache"] == 256 * 1024 * 1024
    assert resolve({"chunk_cache": "64M"})["chunk_cache"] == 64 * 1024 * 1024
    assert resolve(env={"GRIDSERVE_CHUNK_CACHE": "0"})["chunk_cache"] == 0
    assert resolve(file_text='chunk-cache = "1G"\n', tmp_path=tmp_path)["chunk_cache"] == 2**30
    with pytest.raises(ConfigError, match="--chunk-cache"):
        resolve({"chunk_cache": "lots"})


def test_upload_expiry_is_a_duration(tmp_path: Path) -> None:
    assert resolve()["upload_expiry"] == 86400
    assert resolve({"upload_expiry": "30m"})["upload_expiry"] == 1800
    assert resolve(env={"GRIDSERVE_UPLOAD_EXPIRY": "2"})["upload_expiry"] == 2
    assert (
        resolve(file_text='upload_expiry = "7d"\n', tmp_path=tmp_path)["upload_expiry"] == 7 * 86400
    )
    assert parse_duration("1.5h") == 5400 and parse_duration(" 90s ") == 90
    for bad in ("0", "-1", "1w", "", "h"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ConfigError):
        resolve({"upload_expiry": "soon"})
