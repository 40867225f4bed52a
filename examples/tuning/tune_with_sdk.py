"""Tune the built-in image-classification algorithm from Python, as with SageMaker's SDK.

Run after importing, splitting and packing a dataset named ``idc``::

    python examples/tuning/tune_with_sdk.py
"""

from bcd.sdk import (
    CategoricalParameter,
    ContinuousParameter,
    Estimator,
    HyperparameterTuner,
    IntegerParameter,
)


def main() -> None:
    estimator = Estimator(
        algorithm="image-classification",
        hyperparameters={"num_classes": 2, "image_shape": "3,50,50", "num_layers": 18, "epochs": 5},
    )
    tuner = HyperparameterTuner(
        estimator,
        objective_metric_name="validation:accuracy",
        hyperparameter_ranges={
            "optimizer": CategoricalParameter(["sgd", "adam"]),
            "learning_rate": ContinuousParameter(1e-4, 1e-1, scaling_type="Logarithmic"),
            "mini_batch_size": IntegerParameter(32, 128),
        },
        strategy="Bayesian",
        objective_type="Maximize",
        max_jobs=6,
        max_parallel_jobs=2,
        early_stopping_type="Auto",
        random_seed=42,
    )
    tuner.fit(
        {"train": "dataset://idc/train", "validation": "dataset://idc/validation"},
        job_name="idc-sdk-tuning",
    )
    print("best training job:", tuner.best_training_job())
    for row in tuner.analytics().rows():
        print(row)


if __name__ == "__main__":
    main()
