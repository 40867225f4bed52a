"""Errors, names, settings and the CLI root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bcd import errors
from bcd.cli.main import exit_code_for
from bcd.config import Settings
from bcd.names import validate_name


@pytest.mark.parametrize("name", ["a", "job-1", "A1-b2-C3", "x" * 63])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "-lead", "trail-", "under_score", "sp ace", "x" * 64, "dot.s"], ids=repr
)
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(errors.InvalidInputError):
        validate_name(name)


def test_tuning_length_limit() -> None:
    with pytest.raises(errors.InvalidInputError, match="limit is 32"):
        validate_name("t" * 33, "tuning job name", max_length=32)


def test_exit_codes_follow_the_most_specific_class() -> None:
    assert exit_code_for(errors.NotFoundError("x")) == 4
    assert exit_code_for(errors.UnsupportedMediaTypeError("x")) == 2
    assert exit_code_for(errors.BcdError("x")) == 1


def test_settings_defaults_live_under_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'bcd.db'}"
    assert settings.resolved_artifact_root == str(tmp_path / "artifacts")


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from bcd.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'bcd --help imported torch'\n"
        "assert 'onnxruntime' not in sys.modules, 'bcd --help imported onnxruntime'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_client_functions_survive_importing_the_clients_package(settings: Settings) -> None:
    import bcd
    import bcd.clients

    assert callable(bcd.client)
    assert type(bcd.client(settings=settings)).__name__ == "Client"
    assert type(bcd.runtime_client(settings=settings)).__name__ == "RuntimeClient"
