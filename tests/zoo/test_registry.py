"""The registry and ModelSpec: metadata, immutability, TF-free import, and the rows of ``fedmodel zoo``."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import pytest

from fedmodel.zoo import available_models, count_params, describe_models, get_spec

# Parameter counts at the defaults, checked by hand against the sources (see each model's docstring).
PUBLISHED_COUNTS = {
    "cnn": 26_010,  # tensorflow-privacy MNIST tutorial CNN
    "lenet": 61_706,  # LeNet-5
    "logreg": 7_850,  # 784 * 10 + 10
    "mlp": 199_210,  # McMahan et al. 2017, 2NN
    "resnet20": 269_722,  # He et al. 2016 ResNet-20 ("0.27M"), GroupNorm gamma/beta in place of BN's
}


def test_available_models_sorted_and_complete() -> None:
    names = available_models()
    assert names == sorted(names)
    assert {"logreg", "mlp", "cnn", "lenet", "resnet20", "lstm", "transformer"} <= set(names)
    assert all(get_spec(name).name == name for name in names)


@pytest.mark.parametrize(("name", "params"), sorted(PUBLISHED_COUNTS.items()))
def test_published_parameter_counts(name: str, params: int) -> None:
    spec = get_spec(name)
    assert count_params(name, input_shape=spec.default_input_shape, num_classes=spec.default_num_classes) == params


def test_specs_and_hyperparameters_are_immutable() -> None:
    spec = get_spec("mlp")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.default_hparams["hidden"] = (1,)  # type: ignore[index]
    hparams = spec.make_hparams({"hidden": [16, 8]})
    assert hparams.hidden == (16, 8)  # a list from a TOML file is stored as a tuple
    with pytest.raises(dataclasses.FrozenInstanceError):
        hparams.hidden = (1,)
    assert dict(spec.default_hparams) == {"hidden": (200, 200), "dropout": 0.0}


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("name", "my model", "model name must be a Python identifier, got 'my model'"),
        ("task", "regression", "task must be one of ('classification', 'next-token'), got 'regression'"),
        ("description", "two\nlines", "description must be one non-empty line"),
        ("default_input_shape", (4, 4, 1), "cnn: height and width must be >= 7"),
        ("default_num_classes", 1, "num_classes must be an int >= 2, got 1"),
    ],
)
def test_spec_rejects_inconsistent_definitions(field: str, value: object, expected: str) -> None:
    spec = get_spec("cnn")
    with pytest.raises(ValueError) as info:
        dataclasses.replace(spec, **{field: value})  # type: ignore[arg-type]
    assert expected in str(info.value)


def test_describe_models_rows() -> None:
    rows = describe_models()
    assert [row["name"] for row in rows] == available_models()
    by_name = {row["name"]: row for row in rows}
    assert by_name["cnn"]["input"] == "28x28x1 image"
    assert by_name["lstm"]["input"] == "80 tokens"
    assert by_name["mlp"]["input"] == "784-d vector"
    for row in rows:
        spec = get_spec(str(row["name"]))
        assert set(row) == {"name", "task", "input", "num_classes", "params", "description"}
        assert row["params"] == count_params(
            spec.name, input_shape=spec.default_input_shape, num_classes=spec.default_num_classes
        )
        assert row["task"] == spec.task and row["num_classes"] == spec.default_num_classes


def test_zoo_metadata_does_not_import_tensorflow() -> None:
    script = textwrap.dedent(
        """
        import sys
        import fedmodel.zoo as zoo
        from fedmodel.errors import ConfigError
        assert zoo.count_params("cnn", input_shape=(28, 28, 1), num_classes=10) == 26010
        zoo.available_models(), zoo.get_spec("lstm"), zoo.describe_models()
        try:
            zoo.build_model("cnn", input_shape=(28, 28, 1), num_classes=1)
        except ConfigError:
            pass
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
