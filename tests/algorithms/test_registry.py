"""The algorithm registry, hyperparameter validation and the commands it builds."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from bcd.algorithms import (
    METRIC_NAMES,
    get_algorithm,
    list_algorithms,
    script_command,
    validate_metric_definitions,
)
from bcd.algorithms.metrics import format_metric_line
from bcd.algorithms.train import parse_arguments
from bcd.errors import InvalidInputError


def test_list_algorithms_names_the_three_families() -> None:
    assert list_algorithms() == ["cnn", "image-classification", "script"]


@pytest.mark.parametrize("name", ["resnet", "", "CNN", None])
def test_unknown_algorithm_lists_the_valid_ones(name: object) -> None:
    with pytest.raises(InvalidInputError) as error:
        get_algorithm(name)  # type: ignore[arg-type]
    assert "cnn, image-classification, script" in str(error.value)


@pytest.mark.parametrize("name", ["cnn", "image-classification"])
def test_builtin_metric_definitions_cover_all_seven_and_match_the_trainer(name: str) -> None:
    definitions = get_algorithm(name).metric_definitions
    names = [definition["Name"] for definition in definitions]
    assert set(METRIC_NAMES) <= set(names)
    for definition in definitions:
        line = format_metric_line(4, definition["Name"], 0.8125)
        match = re.search(definition["Regex"], f"noise {line}\n")
        assert match is not None and float(match.group(1)) == 0.8125
        other = format_metric_line(4, "validation:bacx", 0.5)
        assert definition["Name"] == "validation:bacx" or not re.search(definition["Regex"], other)


def test_an_undefined_metric_is_not_scraped() -> None:
    regex = get_algorithm("cnn").metric_definitions[0]["Regex"]
    assert re.search(regex, format_metric_line(1, "train:loss", float("nan"))) is None


def test_defaults_are_filled_and_strings_typed() -> None:
    values = get_algorithm("image-classification").validate_hyperparameters(
        {"epochs": "3", "learning_rate": "0.01", "early_stopping": "True", "num_layers": "34"}
    )
    assert values["epochs"] == 3 and values["learning_rate"] == 0.01
    assert values["early_stopping"] is True and values["num_layers"] == 34
    assert values["mini_batch_size"] == 128 and values["image_shape"] == "3,50,50"
    assert values["optimizer"] == "adam" and values["stem"] == "compact"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"epochs": 4}, {"epochs": 4}),
        ({"epochs": 4.0}, {"epochs": 4}),
        ({"learning_rate": 1}, {"learning_rate": 1.0}),
        ({"optimizer": "SGD"}, {"optimizer": "sgd"}),
        ({"early_stopping": 1}, {"early_stopping": True}),
        ({"lr_scheduler_step": "10, 20"}, {"lr_scheduler_step": "10,20"}),
        ({"class_weights": "1,2"}, {"class_weights": "1.0,2.0"}),
    ],
    ids=["int", "whole-float", "int-for-float", "choice-case", "bool-int", "steps", "weights"],
)
def test_numbers_and_strings_are_both_accepted(raw: dict, expected: dict) -> None:
    values = get_algorithm("cnn").validate_hyperparameters(raw)
    assert {name: values[name] for name in expected} == expected


BAD_HYPERPARAMETERS = [
    pytest.param("cnn", {"epoch": "3"}, "unknown hyperparameter", id="unknown-name"),
    pytest.param("cnn", {"num_layers": "18"}, "valid ones:", id="resnet-only-for-cnn"),
    pytest.param("cnn", {"epochs": "ten"}, "epochs='ten' is invalid", id="not-a-number"),
    pytest.param("cnn", {"epochs": "2.5"}, "not a whole number", id="fractional-int"),
    pytest.param("cnn", {"epochs": True}, "boolean is not a int", id="bool-for-int"),
    pytest.param("cnn", {"epochs": "0"}, "out of range", id="zero-epochs"),
    pytest.param("cnn", {"mini_batch_size": "5000"}, "int in [1, 4096]", id="batch-too-big"),
    pytest.param("cnn", {"learning_rate": "0"}, "float in (0, 10]", id="zero-rate"),
    pytest.param("cnn", {"learning_rate": "nan"}, "not a finite number", id="nan-rate"),
    pytest.param("cnn", {"beta_1": "1"}, "float in [0, 1)", id="beta-one"),
    pytest.param("cnn", {"eps": "0"}, "out of range", id="zero-eps"),
    pytest.param("cnn", {"dropout": "-0.1"}, "out of range", id="negative-dropout"),
    pytest.param("cnn", {"optimizer": "adamw"}, "sgd, adam, rmsprop, nag", id="optimizer"),
    pytest.param("cnn", {"augmentation_type": "rotate"}, "crop_color", id="augmentation"),
    pytest.param("cnn", {"early_stopping": "maybe"}, "not a boolean", id="bool"),
    pytest.param("cnn", {"image_shape": "1,50,50"}, "channels must be 3", id="gray-shape"),
    pytest.param("cnn", {"image_shape": "3,50"}, "three integers", id="short-shape"),
    pytest.param("cnn", {"image_shape": "3,8,8"}, "between 16 and 1024", id="tiny-shape"),
    pytest.param("cnn", {"lr_scheduler_step": "20,10"}, "increasing", id="steps-order"),
    pytest.param("cnn", {"lr_scheduler_step": "a"}, "positive epochs", id="steps-text"),
    pytest.param(
        "cnn",
        {"lr_scheduler": "cosine", "lr_scheduler_step": "5"},
        "only applies to lr_scheduler=step",
        id="steps-with-cosine",
    ),
    pytest.param("cnn", {"class_weights": "1,2,3"}, "one weight per class", id="weight-count"),
    pytest.param("cnn", {"class_weights": "1,-2"}, "positive", id="negative-weight"),
    pytest.param("cnn", {"class_weights": "heavy"}, "balanced", id="weight-word"),
    pytest.param("cnn", {"model_selection_metric": "train:loss"}, "validation:bac", id="metric"),
    pytest.param("cnn", {"label_smoothing": "0.6"}, "float in [0, 0.5]", id="smoothing"),
    pytest.param("cnn", {"mixup_alpha": "2"}, "float in [0, 1]", id="mixup"),
    pytest.param("image-classification", {"num_layers": "20"}, "18, 34, 50", id="depth"),
    pytest.param("image-classification", {"stem": "big"}, "compact, full", id="stem"),
]


@pytest.mark.parametrize(("algorithm", "raw", "message"), BAD_HYPERPARAMETERS)
def test_bad_hyperparameters_are_refused_clearly(algorithm: str, raw: dict, message: str) -> None:
    with pytest.raises(InvalidInputError) as error:
        get_algorithm(algorithm).validate_hyperparameters(raw)
    assert message in str(error.value)


def test_unknown_hyperparameter_error_lists_valid_ones() -> None:
    with pytest.raises(InvalidInputError) as error:
        get_algorithm("cnn").validate_hyperparameters({"batch": "3"})
    assert "mini_batch_size" in str(error.value) and "learning_rate" in str(error.value)


def test_hyperparameters_must_be_a_mapping() -> None:
    with pytest.raises(InvalidInputError, match="mapping"):
        get_algorithm("cnn").validate_hyperparameters([("epochs", "3")])  # type: ignore[arg-type]


def test_missing_pretrained_file_says_where_to_put_it(bcd_home: Path) -> None:
    with pytest.raises(InvalidInputError) as error:
        get_algorithm("image-classification").validate_hyperparameters(
            {"use_pretrained_model": "1"}
        )
    message = str(error.value)
    assert str(bcd_home / "pretrained" / "resnet18.pth") in message
    assert "never downloads" in message and "pretrained_weights=PATH" in message


def test_pretrained_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "w.pth").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    values = get_algorithm("image-classification").validate_hyperparameters(
        {"use_pretrained_model": "true", "pretrained_weights": "w.pth"}
    )
    assert values["pretrained_weights"] == str(tmp_path / "w.pth")


@pytest.mark.parametrize("name", ["cnn", "image-classification"])
def test_builtin_command_round_trips_through_the_trainer_arguments(name: str) -> None:
    algorithm = get_algorithm(name)
    values = algorithm.validate_hyperparameters({"epochs": "3", "beta_2": "0.99"})
    argv = algorithm.command(values)
    assert argv[:6] == [sys.executable, "-u", "-m", "bcd.algorithms.train", "--algorithm", name]
    parsed_algorithm, parsed = parse_arguments(argv[4:])
    assert parsed_algorithm is algorithm and parsed == values


def test_builtin_command_refuses_options() -> None:
    with pytest.raises(InvalidInputError, match="takes no options"):
        get_algorithm("cnn").command({}, entry_point="train.py")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "3"], "--algorithm is required"),
        (["--algorithm", "script"], "not run by the built-in trainer"),
        (["--algorithm", "cnn", "--epochs"], "'--name value' pairs"),
        (["--algorithm", "cnn", "epochs", "3"], "'--name value' pairs"),
        (["--algorithm", "cnn", "--epochs", "3", "--epochs", "4"], "given twice"),
    ],
    ids=["no-algorithm", "script", "dangling", "no-dashes", "twice"],
)
def test_trainer_argument_errors(argv: list[str], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_arguments(argv)


# --- script mode ---------------------------------------------------------------------------


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    (folder / "pkg").mkdir(parents=True)
    (folder / "train.py").write_text("print('hi')\n")
    (folder / "pkg" / "run.py").write_text("print('hi')\n")
    (folder / "notes.txt").write_text("x")
    return folder


def test_script_command_passes_hyperparameters_as_flags(source_dir: Path) -> None:
    algorithm = get_algorithm("script")
    values = algorithm.validate_hyperparameters(
        {
            "epochs": 3,
            "learning-rate": 0.5,
            "verbose": True,
            "name": "a b",
            "sagemaker_program": "x",
        }
    )
    argv = algorithm.command(values, entry_point="train.py", source_dir=source_dir)
    assert argv == [
        sys.executable,
        "-u",
        str(source_dir / "train.py"),
        "--epochs",
        "3",
        "--learning-rate",
        "0.5",
        "--verbose",
        "True",
        "--name",
        "a b",
    ]
    assert algorithm.metric_definitions == []


def test_script_command_without_source_dir_and_nested_entry(source_dir: Path) -> None:
    assert script_command(source_dir / "train.py")[2] == str(source_dir / "train.py")
    assert script_command("pkg/run.py", {}, source_dir)[2] == str(source_dir / "pkg" / "run.py")


@pytest.mark.parametrize(
    ("entry_point", "message"),
    [
        ("missing.py", "does not exist"),
        ("notes.txt", "must be a Python file"),
        ("../outside.py", "outside source_dir"),
        ("/abs/train.py", "must be relative"),
    ],
    ids=["missing", "not-python", "escape", "absolute"],
)
def test_bad_entry_points(source_dir: Path, entry_point: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        get_algorithm("script").command({}, entry_point=entry_point, source_dir=source_dir)


def test_script_needs_an_entry_point_and_a_real_source_dir(source_dir: Path) -> None:
    algorithm = get_algorithm("script")
    with pytest.raises(InvalidInputError, match="needs an entry_point"):
        algorithm.command({})
    with pytest.raises(InvalidInputError, match="is not a folder"):
        algorithm.command({}, entry_point="train.py", source_dir=source_dir / "nope")
    with pytest.raises(InvalidInputError, match="unknown option"):
        algorithm.command({}, entry_point="train.py", image="x")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"bad name": "1"}, "cannot be passed"),
        ({"-x": "1"}, "cannot be passed"),
        ({"epochs": [1, 2]}, "string, number or boolean"),
        ({"rate": float("inf")}, "finite"),
    ],
    ids=["space", "dash-first", "list", "inf"],
)
def test_script_hyperparameter_errors(raw: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        get_algorithm("script").validate_hyperparameters(raw)


def test_metric_definitions_are_checked() -> None:
    good = [{"Name": "validation:bac", "Regex": r"val_bac: ([0-9.]+)"}]
    assert validate_metric_definitions(good) == good
    assert validate_metric_definitions(None) == []
    bad_cases = [
        ("not a list", "list of {Name, Regex}"),
        ([{"Name": "a"}], "exactly the keys"),
        ([{"Name": "", "Regex": "(x)"}], "non-empty"),
        ([{"Name": "a", "Regex": "(1"}], "is invalid"),
        ([{"Name": "a", "Regex": "x"}], "capturing group"),
        ([{"Name": "a", "Regex": "(x)"}, {"Name": "a", "Regex": "(y)"}], "defined twice"),
    ]
    for definitions, message in bad_cases:
        with pytest.raises(InvalidInputError, match=re.escape(message)):
            validate_metric_definitions(definitions)  # type: ignore[arg-type]
