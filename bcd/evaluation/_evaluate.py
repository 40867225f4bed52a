"""One evaluation end to end: resolve the model, score the patches, fit, measure.

Order matters for honesty: the calibration (temperature and logit bias) and
the BAC-optimal threshold are fitted on the *validation* patches only, then
applied unchanged to the evaluated patches; nothing is tuned on the data being
reported.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bcd.config import Settings, get_settings
from bcd.errors import InvalidInputError
from bcd.evaluation._bootstrap import bootstrap_metrics
from bcd.evaluation._calibration import (
    BIAS_RANGE,
    TEMPERATURE_RANGE,
    bac_optimal_threshold,
    fit_logistic,
    fit_platt,
    platt_nll,
)
from bcd.evaluation._inference import RuntimeScorer, probabilities_from_margins
from bcd.evaluation._metrics import point_metrics
from bcd.evaluation._patients import per_patient_results
from bcd.evaluation._report import EvaluationResult
from bcd.evaluation._resolve import MODEL_JSON, ModelTarget, resolve_model
from bcd.neighbourhood import SlideContext, check_radius, patch_features

logger = logging.getLogger(__name__)

#: Called with (stage, done, total); stages are "read", "validation" and "evaluate".
Progress = Callable[[str, int, int], None]


@dataclass
class PatchSet:
    """Labelled patches to score, and where they came from.

    Attributes:
        images: (N, H, W, 3) uint8 patches (a memory map for packed splits).
        labels: (N,) 0/1 labels.
        patient_ids: (N,) patient of each patch.
        xs: (N,) x coordinates.
        ys: (N,) y coordinates.
        description: ``source``, ``dataset``/``path``, ``split``, ``fingerprint``...
    """

    images: np.ndarray
    labels: np.ndarray
    patient_ids: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    description: dict[str, Any] = field(default_factory=dict)


def dataset_patches(name: str, split: str, settings: Settings) -> PatchSet:
    """The patches of split ``split`` of imported dataset ``name``.

    Raises:
        NotFoundError: Unknown dataset or split.
    """
    from bcd.data import open_split

    packed = open_split(name, split, settings)
    return PatchSet(
        images=packed.images,
        labels=np.asarray(packed.labels),
        patient_ids=np.asarray(packed.patient_ids),
        xs=np.asarray(packed.xs),
        ys=np.asarray(packed.ys),
        description={
            "source": "dataset",
            "dataset": name,
            "split": split,
            "fingerprint": packed.fingerprint,
            "description": f"dataset {name!r}, split {split!r}",
        },
    )


def folder_patches(path: Path | str, progress: Progress | None = None) -> PatchSet:
    """The patches of a dataset-layout folder, decoded in memory (not imported).

    Raises:
        NotFoundError: Not a folder.
        InvalidInputError: No usable patch in it.
    """
    from bcd.evaluation._folder import read_patch_folder

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress("read", done, total)

    folder = read_patch_folder(path, report)
    return PatchSet(
        images=folder.images,
        labels=folder.labels,
        patient_ids=folder.patient_ids,
        xs=folder.xs,
        ys=folder.ys,
        description={
            "source": "folder",
            "path": str(folder.root),
            "split": None,
            "fingerprint": folder.fingerprint,
            "description": f"folder {folder.root}",
            "rejected_files": len(folder.rejected),
            "rejected_examples": [
                {"path": path, "reason": reason} for path, reason in folder.rejected[:50]
            ],
        },
    )


def write_calibration(
    model_dir: Path,
    temperature: float,
    bias: float,
    threshold: float,
    calibration: dict[str, Any],
    slide_context: dict[str, Any] | None = None,
) -> None:
    """Set ``temperature``, ``logit_bias`` and ``decision_threshold`` in a model
    folder's ``model.json`` (written aside, then renamed).

    Args:
        model_dir: The model folder.
        temperature: The fitted temperature.
        bias: The fitted logit bias.
        threshold: The decision threshold on the calibrated P(IDC) that serving uses.
        calibration: How they were fitted (recorded under ``calibration``).
        slide_context: The slide context fitted on the new calibration, stored
            as ``slide_context``. ``None`` removes an old one: it was fitted on
            the previous calibration's logits and would no longer fit.
    """
    path = model_dir / MODEL_JSON
    document = json.loads(path.read_text(encoding="utf-8"))
    document["temperature"] = temperature
    document["logit_bias"] = bias
    document["decision_threshold"] = threshold
    document["calibration"] = calibration
    if slide_context is not None:
        document["slide_context"] = slide_context
    elif document.pop("slide_context", None) is not None:
        logger.warning(
            "removed the slide context from %s: it was fitted on the previous calibration; "
            "refit it with --context-radius",
            path,
        )
    partial = path.with_name(f".{MODEL_JSON}.partial")
    partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def _score(
    scorer: RuntimeScorer, patches: PatchSet, tta: bool, stage: str, progress: Progress | None
) -> tuple[np.ndarray, float]:
    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(stage, done, total)

    started = time.perf_counter()
    margins = scorer.margins(patches.images, tta, report)
    return margins, time.perf_counter() - started


def _validation_findings(
    scorer: RuntimeScorer,
    validation: PatchSet,
    evaluated: PatchSet,
    tta: bool,
    calibrate: bool,
    progress: Progress | None,
) -> tuple[dict[str, Any], float, float, np.ndarray]:
    """Fit calibration (optionally) and the BAC-optimal threshold on validation patches.

    Returns:
        The findings, the temperature and logit bias to score with, and the
        validation patches' P(IDC) with them.
    """
    margins, _ = _score(scorer, validation, tta, "validation", progress)
    temperature, bias = scorer.temperature, scorer.logit_bias
    findings: dict[str, Any] = {
        **validation.description,
        "patches": int(validation.labels.size),
        "patients": int(np.unique(validation.patient_ids).size),
        "previous_temperature": temperature,
        "previous_logit_bias": bias,
        "fitted_temperature": None,
        "fitted_logit_bias": None,
    }
    if calibrate:
        fitted, fitted_bias = fit_platt(margins, validation.labels)
        if not (
            TEMPERATURE_RANGE[0] * 1.01 < fitted < TEMPERATURE_RANGE[1] / 1.01
            and BIAS_RANGE[0] * 0.99 < fitted_bias < BIAS_RANGE[1] * 0.99
        ):
            raise InvalidInputError(
                "the model separates the validation patches perfectly (or they hold one "
                f"class), so calibration has no optimum (the fit ran to T = {fitted:.3g}, "
                f"b = {fitted_bias:.3g}); model.json was left as it was — calibrate on a "
                "larger or harder validation set"
            )
        findings.update(
            fitted_temperature=fitted,
            fitted_logit_bias=fitted_bias,
            nll_before=platt_nll(margins, validation.labels, temperature, bias),
            nll_after=platt_nll(margins, validation.labels, fitted, fitted_bias),
        )
        temperature, bias = fitted, fitted_bias
    scores = probabilities_from_margins(margins, temperature, bias)
    threshold, bac = bac_optimal_threshold(validation.labels, scores)
    findings.update(bac_optimal_threshold=threshold, bac_at_optimum=bac)
    shared = np.intersect1d(np.unique(validation.patient_ids), np.unique(evaluated.patient_ids))
    findings["shared_patients"] = int(shared.size)
    if shared.size:
        logger.warning(
            "%d patients appear in both the validation and the evaluated patches; "
            "the fitted threshold is not independent of the result",
            shared.size,
        )
    return findings, temperature, bias, scores


def _context_findings(
    validation: PatchSet, scores: np.ndarray, radius: int
) -> tuple[dict[str, Any], SlideContext]:
    """Fit the slide context of ``radius`` on the validation patches' P(IDC)."""
    features = patch_features(scores, validation.patient_ids, validation.xs, validation.ys, radius)
    weights, bias = fit_logistic(features, validation.labels)
    fitted = SlideContext(radius, tuple(float(w) for w in weights), bias)
    combined = fitted.probabilities(features)
    threshold, bac = bac_optimal_threshold(validation.labels, combined)
    context = replace(fitted, decision_threshold=threshold)
    findings = {
        **context.to_json(),
        "bac_at_optimum": bac,
        "nll_patch": point_metrics(validation.labels, scores, threshold)["log_loss"],
        "nll_context": point_metrics(validation.labels, combined, threshold)["log_loss"],
    }
    return findings, context


def _stored_context(
    fitted: dict[str, Any] | None, validation: PatchSet | None, tta: bool
) -> dict[str, Any] | None:
    """The ``slide_context`` object for ``model.json``: the fit and how it was made."""
    if fitted is None:
        return None
    return {
        **{key: fitted[key] for key in ("radius", "weights", "bias", "decision_threshold")},
        "fitted": {
            "method": "logistic regression on the tile's logit and its window means, "
            "minimum validation NLL",
            "validation": validation.description if validation else None,
            "tta": tta,
            "nll_patch": fitted["nll_patch"],
            "nll_context": fitted["nll_context"],
            "bac_at_optimum": fitted["bac_at_optimum"],
        },
    }


def evaluate(
    model: str,
    *,
    dataset: str | None = None,
    split: str = "test",
    data_folder: Path | str | None = None,
    validation_split: str | None = None,
    validation_folder: Path | str | None = None,
    threshold: float | None = None,
    calibrate: bool = False,
    bootstrap: int = 1000,
    seed: int = 0,
    tta: bool | None = None,
    context_radius: int = 0,
    variant: str | None = None,
    threads: int | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> EvaluationResult:
    """Evaluate a model on patient-held-out patches, with patient-bootstrap intervals.

    Args:
        model: A model folder path, a registered model name, or an endpoint name.
        dataset: Imported dataset to take ``split`` (and ``validation_split``) from.
        split: The split to evaluate (with ``dataset``).
        data_folder: Evaluate this dataset-layout folder instead of a split.
        validation_split: Split of ``dataset`` to fit the threshold (and
            temperature) on.
        validation_folder: A dataset-layout folder to fit them on instead.
        threshold: Decision threshold on P(IDC); default the BAC-optimal
            validation threshold when validation data is given, else the
            model's ``decision_threshold`` (0.5 unless calibrated).
        calibrate: Fit the temperature and logit bias on the validation
            margins (Platt scaling), use them, and write them with the
            BAC-optimal threshold into the folder's ``model.json``.
        bootstrap: Patient-bootstrap replicates for the intervals.
        seed: Seed of the bootstrap.
        tta: Average the 8 dihedral views; ``None`` follows ``model.json``.
        context_radius: Score each patch with its neighbours on its patient's
            grid, as whole-slide analysis does (:mod:`bcd.neighbourhood`):
            the context is fitted on the validation data, or taken from
            ``model.json`` without it. 0 scores every patch alone, as the
            single-patch API does. With ``calibrate`` the fitted context is
            written into ``model.json`` as ``slide_context``.
        variant: Endpoint variant to evaluate (default the heaviest).
        threads: ONNX Runtime threads (default all cores).
        settings: Defaults to :func:`bcd.config.get_settings`.
        progress: Called with (stage, done, total).

    Returns:
        The result; write it with :func:`bcd.evaluation.write_report`.

    Raises:
        InvalidInputError: Contradictory or missing arguments.
        NotFoundError: Unknown model, endpoint, dataset, split or folder.
    """
    settings = settings or get_settings()
    if dataset is None and data_folder is None:
        raise InvalidInputError(
            "say what to evaluate: --dataset NAME (with --split) or --data FOLDER"
        )
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise InvalidInputError(f"--threshold must lie in [0, 1], got {threshold}")
    if validation_split is not None and validation_folder is not None:
        raise InvalidInputError("give --validation-split or --validation-data, not both")
    if validation_split is not None and dataset is None:
        raise InvalidInputError("--validation-split needs --dataset NAME to take the split from")
    if data_folder is None and validation_split == split:
        raise InvalidInputError(
            f"the validation split and the evaluated split are both {split!r}; fitting a "
            "threshold on the data you report overstates accuracy — use another split"
        )
    has_validation = validation_split is not None or validation_folder is not None
    context_radius = check_radius(context_radius)
    if calibrate and not has_validation:
        raise InvalidInputError("--calibrate fits on validation data: add --validation-split")
    target: ModelTarget = resolve_model(model, settings, variant)
    if calibrate and target.kind != "folder":
        raise InvalidInputError(
            "--calibrate writes the temperature into model.json, so it needs a model folder "
            f"path; {model!r} is a registered {target.kind} whose artifacts must not change "
            "under it. Calibrate the training job's model folder, then register it."
        )

    evaluated = (
        folder_patches(data_folder, progress)
        if data_folder is not None
        else dataset_patches(str(dataset), split, settings)
    )
    validation = None
    if validation_folder is not None:
        validation = folder_patches(validation_folder, progress)
    elif validation_split is not None:
        validation = dataset_patches(str(dataset), validation_split, settings)

    scorer = RuntimeScorer(target.model_dir, threads=threads)
    try:
        use_tta = scorer.default_tta if tta is None else tta
        temperature, bias = scorer.temperature, scorer.logit_bias
        model_threshold = scorer.decision_threshold
        model_context = scorer.spec.slide_context
        if (
            context_radius
            and validation is None
            and (model_context is None or model_context.radius != context_radius)
        ):
            stored = f"radius {model_context.radius}" if model_context else "none"
            raise InvalidInputError(
                f"the model has no slide context of radius {context_radius} (model.json has "
                f"{stored}); give validation data (--validation-split) to fit one"
            )
        findings = None
        if validation is not None:
            findings, temperature, bias, validation_scores = _validation_findings(
                scorer, validation, evaluated, use_tta, calibrate, progress
            )
        margins, seconds = _score(scorer, evaluated, use_tta, "evaluate", progress)
        algorithm, class_names = scorer.spec.algorithm, scorer.spec.class_names
    finally:
        scorer.close()
    scores = probabilities_from_margins(margins, temperature, bias)
    context = None
    if context_radius:
        if findings is not None and validation is not None:
            findings["slide_context"], context = _context_findings(
                validation, validation_scores, context_radius
            )
        else:
            context = model_context  # its radius was checked before scoring
    if context is not None:
        scores = context.probabilities(
            patch_features(
                scores, evaluated.patient_ids, evaluated.xs, evaluated.ys, context_radius
            )
        )

    if threshold is not None:
        used, source = float(threshold), "--threshold"
    elif findings is not None:
        optimal = context.decision_threshold if context else findings["bac_optimal_threshold"]
        used, source = optimal, "BAC-optimal on the validation data"
    elif context is not None:
        used, source = context.decision_threshold, "the model's slide_context, no validation data"
    else:
        used, source = model_threshold, "the model's decision_threshold, no validation data"

    intervals = bootstrap_metrics(
        evaluated.labels, scores, evaluated.patient_ids, used, n_replicates=bootstrap, seed=seed
    )
    if calibrate and findings is not None:
        write_calibration(
            target.model_dir,
            temperature,
            bias,
            findings["bac_optimal_threshold"],
            {
                "method": "Platt scaling (temperature and logit bias), minimum validation NLL",
                "validation": validation.description if validation else None,
                "tta": use_tta,
                "nll_before": findings["nll_before"],
                "nll_after": findings["nll_after"],
                "bac_optimal_threshold": findings["bac_optimal_threshold"],
            },
            _stored_context(findings.get("slide_context"), validation, use_tta),
        )
        logger.info(
            "wrote temperature %.4f, logit bias %.4f and threshold %.4f into %s",
            temperature,
            bias,
            findings["bac_optimal_threshold"],
            target.model_dir / MODEL_JSON,
        )
    n = int(evaluated.labels.size)
    return EvaluationResult(
        model={
            **target.describe(),
            "algorithm": algorithm,
            "inference_seconds": seconds,
            "patches_per_second": n / seconds if seconds > 0 else None,
        },
        data=evaluated.description,
        labels=evaluated.labels,
        scores=scores,
        patient_ids=evaluated.patient_ids,
        threshold=used,
        threshold_source=source,
        temperature=temperature,
        logit_bias=bias,
        metrics=intervals,
        per_patient=per_patient_results(evaluated.labels, scores, evaluated.patient_ids, used),
        bootstrap={
            "replicates": bootstrap,
            "seed": seed,
            "confidence": 0.95,
            "unit": "patient",
            "method": "percentile",
        },
        validation=findings,
        tta=use_tta,
        slide_context=(
            {
                **context.to_json(),
                "source": "fitted on the validation data"
                if findings is not None
                else "the model's slide_context",
            }
            if context is not None
            else None
        ),
        xs=evaluated.xs,
        ys=evaluated.ys,
        class_names=(class_names[0], class_names[1]),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
