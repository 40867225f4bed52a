"""CLI: bcd models | endpoint-configs | endpoints | keys."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bcd.cli.main import main
from bcd.cli.registry import parse_variant
from bcd.config import Settings
from bcd.errors import InvalidInputError
from bcd.registry import keys


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``bcd ARGV``; returns (exit code, stdout, stderr)."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_deploy_flow(capsys: pytest.CaptureFixture[str], artifact: Callable[..., Path]) -> None:
    folder = artifact("m1")
    code, out, _ = run(capsys, "models", "create", "m1", "--model-data", str(folder))
    assert code == 0 and "created model m1" in out
    code, out, _ = run(capsys, "models", "list", "--json")
    assert [m["ModelName"] for m in json.loads(out)] == ["m1"]
    code, out, _ = run(capsys, "models", "describe", "m1")
    assert json.loads(out)["PrimaryContainer"]["ModelDataUrl"] == str(folder)
    code, out, _ = run(
        capsys,
        "endpoint-configs",
        "create",
        "c1",
        "--variant",
        "VariantName=A,ModelName=m1,InitialInstanceCount=2,InitialVariantWeight=0.8",
        "--variant",
        "name=B,model=m1,weight=0.2",
    )
    assert code == 0 and "2 variant(s)" in out
    code, out, _ = run(capsys, "endpoint-configs", "describe", "c1")
    variants = json.loads(out)["ProductionVariants"]
    assert [
        (v["VariantName"], v["InitialInstanceCount"], v["InitialVariantWeight"]) for v in variants
    ] == [
        ("A", 2, 0.8),
        ("B", 1, 0.2),
    ]
    code, out, _ = run(capsys, "endpoints", "create", "e1", "--config", "c1")
    assert code == 0 and "InService" in out and "version 1" in out
    code, out, _ = run(capsys, "endpoint-configs", "create", "c2", "--model", "m1")
    assert code == 0
    code, out, _ = run(capsys, "endpoints", "update", "e1", "--config", "c2")
    assert code == 0 and "config c2, version 2" in out
    code, out, _ = run(capsys, "endpoints", "list")
    assert code == 0 and "e1" in out and "InService" in out
    code, out, _ = run(capsys, "endpoints", "describe", "e1")
    assert json.loads(out)["ProductionVariants"][0]["VariantName"] == "AllTraffic"
    code, out, _ = run(capsys, "endpoints", "delete", "e1")
    assert code == 0 and "deleted endpoint e1" in out
    code, out, _ = run(capsys, "endpoints", "list")
    assert "no endpoints yet" in out


def test_errors_exit_with_mapped_codes(
    capsys: pytest.CaptureFixture[str], artifact: Callable[..., Path]
) -> None:
    code, _, err = run(capsys, "models", "describe", "ghost")
    assert code == 4 and "no model named 'ghost'" in err
    assert "Traceback" not in err
    code, _, err = run(capsys, "models", "create", "m1")
    assert code == 2 and "exactly one model source" in err
    run(capsys, "models", "create", "m1", "--model-data", str(artifact("m1")))
    code, _, err = run(capsys, "models", "create", "m1", "--model-data", str(artifact("m1")))
    assert code == 5 and "exists already" in err
    code, _, err = run(capsys, "endpoint-configs", "create", "c1")
    assert code == 2 and "--model" in err
    code, _, err = run(capsys, "endpoint-configs", "create", "c1", "--variant", "name=A,weight=x")
    assert code == 2 and "must be a number" in err
    code, _, err = run(
        capsys, "endpoint-configs", "create", "c1", "--variant", "name=A,model=m1,weight=0"
    )
    assert code == 2 and "above 0" in err
    code, _, err = run(capsys, "endpoints", "list", "--status", "Asleep")
    assert code == 2 and "--status" in err


def test_failed_endpoint_exits_nonzero_with_reason(
    capsys: pytest.CaptureFixture[str], artifact: Callable[..., Path]
) -> None:
    folder = artifact("m1")
    run(capsys, "models", "create", "m1", "--model-data", str(folder))
    run(capsys, "endpoint-configs", "create", "c1", "--model", "m1")
    (folder / "model.onnx").unlink()
    code, _, err = run(capsys, "endpoints", "create", "e1", "--config", "c1")
    assert code == 6 and "Failed" in err and "model m1" in err


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("VariantName=A,ModelName=m", {"VariantName": "A", "ModelName": "m"}),
        (
            " name = A , model=m, instances=3, weight=0.5 ",
            {
                "VariantName": "A",
                "ModelName": "m",
                "InitialInstanceCount": 3,
                "InitialVariantWeight": 0.5,
            },
        ),
    ],
)
def test_parse_variant(spec: str, expected: dict[str, object]) -> None:
    assert parse_variant(spec) == expected


@pytest.mark.parametrize("spec", ["A", "colour=red", "instances=two"])
def test_parse_variant_refuses(spec: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_variant(spec)


def test_keys_commands(capsys: pytest.CaptureFixture[str], settings: Settings) -> None:
    code, out, _ = run(capsys, "keys", "create", "--name", "pathology-app", "--expires-days", "30")
    assert code == 0 and "shown only once" in out
    raw = next(line for line in out.splitlines() if line.startswith("bcd_"))
    info = keys.verify_api_key(raw, settings=settings)
    code, out, _ = run(capsys, "keys", "list", "--json")
    (listed,) = json.loads(out)
    assert (listed["KeyId"], listed["Name"], listed["Active"]) == (
        info.key_id,
        "pathology-app",
        True,
    )
    assert raw not in out
    code, out, _ = run(capsys, "keys", "revoke", info.key_id)
    assert code == 0
    code, out, _ = run(capsys, "keys", "list")
    assert "revoked" in out
    code, _, err = run(capsys, "keys", "revoke", "0000")
    assert code == 4 and info.key_id in err
