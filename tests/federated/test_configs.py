"""Every standard experiment in simulations/*.toml is a valid configuration whose data and model fit."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmodel.federated.simulate import read_settings, settings_to_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "simulations").glob("*.toml"))
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def test_there_are_standard_configs() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"digits_mlp_iid", "digits_mlp_dirichlet", "digits_logreg_dpfedavg", "shakespeare_lstm_natural"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_validates_with_its_data(path: Path) -> None:
    values = read_settings(path)
    if values.get("dataset") == "shakespeare":
        if not SHAKESPEARE.is_file():
            pytest.skip(f"needs {SHAKESPEARE} (the shared text corpus), absent here")
        values["data-path"] = str(SHAKESPEARE)
    config = settings_to_config(values)  # also loads the data and partitions it
    assert config.rounds >= 1
