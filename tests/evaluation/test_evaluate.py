"""evaluate(): inference through the serving runtime, thresholds, calibration, sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bcd import registry
from bcd.config import Settings
from bcd.errors import InvalidInputError, NotFoundError
from bcd.evaluation import (
    bac_optimal_threshold,
    dataset_patches,
    evaluate,
    fit_logistic,
    fit_platt,
    folder_patches,
    point_metrics,
    render_markdown,
)
from bcd.neighbourhood import patch_features, sigmoid
from bcd.registry._artifacts import validate_model_json
from bcd.serving import ModelRuntime


def _runtime_probabilities(model_dir: Path, images: np.ndarray, tta: bool = False) -> np.ndarray:
    runtime = ModelRuntime(model_dir, threads=1)
    try:
        return runtime.predict(list(images), tta=tta)[:, 1]
    finally:
        runtime.close()


def test_scores_are_what_the_serving_runtime_returns(
    tiny_model: Path, synthetic_settings: Settings
) -> None:
    result = evaluate(str(tiny_model), dataset="syn", bootstrap=0, settings=synthetic_settings)
    test = dataset_patches("syn", "test", synthetic_settings)
    expected = _runtime_probabilities(tiny_model, np.asarray(test.images))
    np.testing.assert_allclose(result.scores, expected, atol=1e-9)
    assert result.data["split"] == "test"
    assert result.data["fingerprint"] == test.description["fingerprint"]
    assert set(result.patient_ids) == set(test.patient_ids)


def test_tta_scores_match_the_runtime_tta(linear_model: Path, real_folders: tuple[Path, Path]):
    patches = folder_patches(real_folders[0])
    plain = evaluate(str(linear_model), data_folder=real_folders[0], tta=False, bootstrap=0)
    result = evaluate(str(linear_model), data_folder=real_folders[0], tta=True, bootstrap=0)
    expected = _runtime_probabilities(linear_model, patches.images, tta=True)
    # The temperature of 1.5 checks that margins are recovered in logit units.
    np.testing.assert_allclose(result.scores, expected, atol=1e-9)
    assert not np.allclose(result.scores, plain.scores, atol=1e-3)  # the views differ
    assert result.tta is True
    assert result.temperature == 1.5


def test_threshold_is_bac_optimal_on_validation(
    tiny_model: Path, real_folders: tuple[Path, Path]
) -> None:
    evaluated, validation = real_folders
    result = evaluate(
        str(tiny_model), data_folder=evaluated, validation_folder=validation, bootstrap=0
    )
    patches = folder_patches(validation)
    expected, bac = bac_optimal_threshold(
        patches.labels, _runtime_probabilities(tiny_model, patches.images)
    )
    assert result.threshold == pytest.approx(expected)
    assert result.validation is not None
    assert result.validation["bac_at_optimum"] == pytest.approx(bac)
    assert result.validation["shared_patients"] == 0
    assert "validation" in result.threshold_source
    # Metrics are computed at the threshold that was used.
    values = point_metrics(result.labels, result.scores, result.threshold)
    assert result.metrics["balanced_accuracy"].value == pytest.approx(values["balanced_accuracy"])


def test_explicit_threshold_wins_and_default_is_half(
    tiny_model: Path, real_folders: tuple[Path, Path]
) -> None:
    evaluated, validation = real_folders
    explicit = evaluate(
        str(tiny_model),
        data_folder=evaluated,
        validation_folder=validation,
        threshold=0.3,
        bootstrap=0,
    )
    assert explicit.threshold == 0.3
    assert explicit.threshold_source == "--threshold"
    assert explicit.validation is not None  # still reported beside it
    default = evaluate(str(tiny_model), data_folder=evaluated, bootstrap=0)
    assert default.threshold == 0.5
    assert default.validation is None


def test_calibrate_fits_on_validation_and_writes_model_json(
    tiny_model: Path, real_folders: tuple[Path, Path]
) -> None:
    evaluated, validation = real_folders
    before = evaluate(str(tiny_model), data_folder=evaluated, bootstrap=0)
    result = evaluate(
        str(tiny_model),
        data_folder=evaluated,
        validation_folder=validation,
        calibrate=True,
        bootstrap=0,
    )
    patches = folder_patches(validation)
    probabilities = _runtime_probabilities(tiny_model, patches.images)
    # The runtime now applies the new temperature and bias; recover margins with them.
    document = json.loads((tiny_model / "model.json").read_text())
    written, bias = document["temperature"], document["logit_bias"]
    margins = written * (np.log(probabilities / (1 - probabilities)) - bias)
    refit = fit_platt(margins, patches.labels)
    assert written == pytest.approx(refit[0], rel=1e-3)
    assert bias == pytest.approx(refit[1], abs=1e-3)
    assert (written, bias) == pytest.approx((result.temperature, result.logit_bias))
    assert document["calibration"]["nll_after"] < document["calibration"]["nll_before"]
    # Serving decides with the threshold fitted on the calibrated validation scores,
    # and a later evaluation without validation data uses that same threshold.
    assert document["decision_threshold"] == pytest.approx(
        result.validation["bac_optimal_threshold"]
    )
    later = evaluate(str(tiny_model), data_folder=evaluated, bootstrap=0)
    assert later.threshold == pytest.approx(document["decision_threshold"])
    assert "decision_threshold" in later.threshold_source
    np.testing.assert_allclose(later.scores, result.scores, atol=1e-6)
    # The tiny model is over-confident on real patches: calibration lowers ECE
    # and log loss on the held-out patients and leaves the ranking alone.
    assert result.metrics["ece"].value < before.metrics["ece"].value
    assert result.metrics["log_loss"].value < before.metrics["log_loss"].value
    assert result.metrics["roc_auc"].value == pytest.approx(before.metrics["roc_auc"].value)


def test_slide_context_is_fitted_on_validation_and_scores_with_the_neighbours(
    tiny_model: Path, real_folders: tuple[Path, Path]
) -> None:
    evaluated, validation = real_folders
    alone = evaluate(str(tiny_model), data_folder=evaluated, validation_folder=validation)
    result = evaluate(
        str(tiny_model),
        data_folder=evaluated,
        validation_folder=validation,
        context_radius=2,
        bootstrap=0,
    )
    # The same fit by hand: logistic regression on the validation patches' features.
    fit = folder_patches(validation)
    fit_features = patch_features(
        _runtime_probabilities(tiny_model, fit.images), fit.patient_ids, fit.xs, fit.ys, 2
    )
    weights, bias = fit_logistic(fit_features, fit.labels)
    threshold, _ = bac_optimal_threshold(fit.labels, sigmoid(fit_features @ weights + bias))
    patches = folder_patches(evaluated)
    features = patch_features(
        _runtime_probabilities(tiny_model, patches.images),
        patches.patient_ids,
        patches.xs,
        patches.ys,
        2,
    )
    np.testing.assert_allclose(result.scores, sigmoid(features @ weights + bias), atol=1e-9)
    assert result.threshold == pytest.approx(threshold)
    assert result.slide_context is not None
    assert result.slide_context["radius"] == 2
    np.testing.assert_allclose(result.slide_context["weights"], weights)
    assert result.validation is not None
    fitted = result.validation["slide_context"]
    assert fitted["nll_context"] <= fitted["nll_patch"]
    assert "with slide context" in render_markdown(result)
    assert "every patch alone" in render_markdown(alone)
    assert alone.slide_context is None
    assert result.summary()["slide_context"]["source"] == "fitted on the validation data"


def test_calibrate_with_context_stores_it_for_slides_and_later_evaluations(
    tiny_model: Path, real_folders: tuple[Path, Path]
) -> None:
    evaluated, validation = real_folders
    with pytest.raises(InvalidInputError, match="no slide context of radius 1"):
        evaluate(str(tiny_model), data_folder=evaluated, context_radius=1)
    fitted = evaluate(
        str(tiny_model),
        data_folder=evaluated,
        validation_folder=validation,
        calibrate=True,
        context_radius=1,
        bootstrap=0,
    )
    document = json.loads((tiny_model / "model.json").read_text())
    stored = document["slide_context"]
    assert stored["radius"] == 1 and len(stored["weights"]) == 2
    assert stored["decision_threshold"] == pytest.approx(fitted.threshold)
    assert stored["fitted"]["validation"]["source"] == "folder"
    validate_model_json(document, "model.json")  # registration accepts it
    runtime = ModelRuntime(tiny_model, threads=1)
    try:
        assert runtime.spec.slide_context is not None
        assert runtime.spec.slide_context.radius == 1
    finally:
        runtime.close()
    later = evaluate(str(tiny_model), data_folder=evaluated, context_radius=1, bootstrap=0)
    np.testing.assert_allclose(later.scores, fitted.scores, atol=1e-6)
    assert later.threshold == pytest.approx(stored["decision_threshold"])
    assert "slide_context" in later.threshold_source
    with pytest.raises(InvalidInputError, match=r"model.json has radius 1"):
        evaluate(str(tiny_model), data_folder=evaluated, context_radius=2)
    # Calibrating again without a context drops the old one: it no longer fits.
    evaluate(
        str(tiny_model),
        data_folder=evaluated,
        validation_folder=validation,
        calibrate=True,
        bootstrap=0,
    )
    assert "slide_context" not in json.loads((tiny_model / "model.json").read_text())


def test_calibrate_refuses_registered_models(
    tiny_model: Path, synthetic_settings: Settings
) -> None:
    registry.create_model(
        "tiny-registered", model_data=str(tiny_model), settings=synthetic_settings
    )
    try:
        with pytest.raises(InvalidInputError, match="model folder"):
            evaluate(
                "tiny-registered",
                dataset="syn",
                validation_split="validation",
                calibrate=True,
                settings=synthetic_settings,
            )
        result = evaluate(
            "tiny-registered", dataset="syn", bootstrap=0, settings=synthetic_settings
        )
        assert result.model["kind"] == "model"
        assert result.model["name"] == "tiny-registered"
    finally:
        registry.delete_model("tiny-registered", settings=synthetic_settings)


def test_endpoint_is_evaluated_through_its_variant(
    tiny_model: Path, synthetic_settings: Settings
) -> None:
    settings = synthetic_settings
    registry.create_model("tiny-ep-model", model_data=str(tiny_model), settings=settings)
    registry.create_endpoint_config(
        "tiny-ep-config",
        [
            {
                "VariantName": "main",
                "ModelName": "tiny-ep-model",
                "InitialInstanceCount": 1,
                "InitialVariantWeight": 1.0,
            }
        ],
        settings=settings,
    )
    registry.create_endpoint("tiny-ep", "tiny-ep-config", settings=settings)
    result = evaluate("tiny-ep", dataset="syn", bootstrap=0, settings=settings)
    assert result.model["kind"] == "endpoint"
    assert result.model["variant"] == "main"
    assert result.model["name"] == "tiny-ep-model"
    with pytest.raises(NotFoundError, match="no variant"):
        evaluate("tiny-ep", dataset="syn", variant="other", settings=settings)


def test_folder_with_bad_files_lists_them(tiny_model: Path, tmp_path: Path) -> None:
    from bcd.testing import make_bad_files, make_synthetic_tree

    tree = make_synthetic_tree(tmp_path / "tree", n_patients=4, patches_per_patient=12)
    bad = make_bad_files(tree)
    result = evaluate(str(tiny_model), data_folder=tree, bootstrap=0)
    assert result.data["rejected_files"] == len(bad)
    assert {row["path"] for row in result.data["rejected_examples"]} == set(bad)
    assert result.labels.size == 4 * 12
    assert result.data["source"] == "folder"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, InvalidInputError, "say what to evaluate"),
        ({"dataset": "syn", "validation_split": "test"}, InvalidInputError, "overstates"),
        ({"dataset": "syn", "calibrate": True}, InvalidInputError, "validation data"),
        ({"dataset": "syn", "threshold": 1.5}, InvalidInputError, r"\[0, 1\]"),
        ({"dataset": "nope"}, NotFoundError, "nope"),
        ({"dataset": "syn", "split": "missing"}, NotFoundError, "missing"),
    ],
    ids=[
        "no-data",
        "validate-on-test",
        "calibrate-without-validation",
        "bad-threshold",
        "unknown-dataset",
        "unknown-split",
    ],
)
def test_bad_requests_fail_clearly(
    tiny_model: Path, synthetic_settings: Settings, kwargs, error, message: str
) -> None:
    with pytest.raises(error, match=message):
        evaluate(str(tiny_model), settings=synthetic_settings, **kwargs)


def test_unknown_model_and_folder_without_model_json(
    tmp_path: Path, synthetic_settings: Settings
) -> None:
    with pytest.raises(NotFoundError, match="neither a model folder"):
        evaluate("no-such-model", dataset="syn", settings=synthetic_settings)
    with pytest.raises(InvalidInputError, match=r"no model\.json"):
        evaluate(str(tmp_path), dataset="syn", settings=synthetic_settings)
