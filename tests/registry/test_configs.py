"""Endpoint configs: production variants and their validation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bcd import registry
from bcd.config import Settings
from bcd.errors import ConflictError, InvalidInputError, NotFoundError
from tests.registry.helpers import variant


@pytest.fixture
def settings(store_settings: Settings) -> Settings:
    """Every test of this module runs on a SQLite and on a PostgreSQL store."""
    return store_settings


def test_create_and_describe_in_boto3_shape(
    model: Callable[[str], str], settings: Settings
) -> None:
    model("m1")
    model("m2")
    variants = [variant("A", "m1", 0.8, 2), variant("B", "m2", 0.2)]
    result = registry.create_endpoint_config("c1", variants, settings=settings)
    assert result == {"EndpointConfigArn": "arn:bcd:sagemaker:local:endpoint-config/c1"}
    described = registry.describe_endpoint_config("c1", settings=settings)
    assert described["EndpointConfigName"] == "c1"
    assert described["ProductionVariants"] == variants
    assert described["CreationTime"].tzinfo is not None


def test_defaults_one_instance_and_weight_one(
    model: Callable[[str], str], settings: Settings
) -> None:
    model("m1")
    registry.create_endpoint_config(
        "c1", [{"VariantName": "A", "ModelName": "m1", "InstanceType": "ml.m5.large"}], settings
    )
    (described,) = registry.describe_endpoint_config("c1", settings)["ProductionVariants"]
    assert described["InitialInstanceCount"] == 1
    assert described["InitialVariantWeight"] == 1.0


def test_a_zero_weight_variant_is_kept_for_pinned_requests(
    model: Callable[[str], str], settings: Settings
) -> None:
    model("m1")
    variants = [variant("main", "m1", 1.0), variant("spare", "m1", 0.0)]
    registry.create_endpoint_config("c1", variants, settings=settings)
    described = registry.describe_endpoint_config("c1", settings)["ProductionVariants"]
    assert [v["InitialVariantWeight"] for v in described] == [1.0, 0.0]


@pytest.mark.parametrize(
    ("variants", "fragment"),
    [
        pytest.param([], "non-empty list", id="empty"),
        pytest.param({"VariantName": "A"}, "non-empty list", id="not-a-list"),
        pytest.param([variant("A", "m1", 0.0)], "above 0", id="only-zero-weight"),
        pytest.param(
            [variant("A", "m1", 0.0), variant("B", "m1", 0.0)], "above 0", id="all-zero-weights"
        ),
        pytest.param([variant("A", "m1", -1.0)], "0 or more", id="negative-weight"),
        pytest.param([variant("A", "m1", float("nan"))], "0 or more", id="nan-weight"),
        pytest.param([variant("A", "m1", instances=0)], "from 1 to", id="zero-instances"),
        pytest.param([variant("A", "m1", instances=1000)], "from 1 to", id="many-instances"),
        pytest.param([variant("A", "m1"), variant("A", "m1")], "appears twice", id="dup-names"),
        pytest.param([{"ModelName": "m1"}], "lacks VariantName", id="no-variant-name"),
        pytest.param([{"VariantName": "A"}], "lacks ModelName", id="no-model-name"),
        pytest.param([{**variant("A", "m1"), "Colour": 1}], "unknown field", id="unknown-key"),
        pytest.param([variant("bad name", "m1")], "VariantName", id="bad-variant-name"),
        pytest.param(["A"], "must be an object", id="not-an-object"),
        pytest.param([variant(f"v{i}", "m1") for i in range(11)], "at most 10", id="too-many"),
    ],
)
def test_bad_variants_are_refused(
    model: Callable[[str], str], settings: Settings, variants: Any, fragment: str
) -> None:
    model("m1")
    with pytest.raises(InvalidInputError, match=fragment):
        registry.create_endpoint_config("c1", variants, settings=settings)
    assert registry.list_endpoint_configs(settings=settings) == []


def test_unknown_model_in_a_variant_lists_models(
    model: Callable[[str], str], settings: Settings
) -> None:
    model("m1")
    with pytest.raises(NotFoundError, match="no model named 'ghost'; existing: m1"):
        registry.create_endpoint_config(
            "c1", [variant("A", "m1"), variant("B", "ghost")], settings=settings
        )
    assert registry.list_endpoint_configs(settings=settings) == []


def test_duplicate_config_conflicts(model: Callable[[str], str], settings: Settings) -> None:
    model("m1")
    registry.create_endpoint_config("c1", [variant("A", "m1")], settings=settings)
    with pytest.raises(ConflictError, match="exists already"):
        registry.create_endpoint_config("c1", [variant("B", "m1")], settings=settings)


def test_unknown_config_lists_existing(model: Callable[[str], str], settings: Settings) -> None:
    model("m1")
    registry.create_endpoint_config("c1", [variant("A", "m1")], settings=settings)
    with pytest.raises(NotFoundError, match="existing: c1"):
        registry.describe_endpoint_config("c9", settings=settings)
    with pytest.raises(NotFoundError, match="existing: c1"):
        registry.delete_endpoint_config("c9", settings=settings)


def test_delete_refused_while_an_endpoint_runs_it(
    model: Callable[[str], str], settings: Settings
) -> None:
    model("m1")
    registry.create_endpoint_config("c1", [variant("A", "m1")], settings=settings)
    registry.create_endpoint("e1", "c1", settings=settings)
    with pytest.raises(ConflictError, match="e1"):
        registry.delete_endpoint_config("c1", settings=settings)
    registry.delete_endpoint("e1", settings=settings)
    registry.delete_endpoint_config("c1", settings=settings)
    assert registry.list_endpoint_configs(settings=settings) == []
    registry.delete_model("m1", settings=settings)  # no variant row keeps it referenced
