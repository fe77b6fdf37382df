"""Budget plans and the ``fedmodel budget`` command: JSON keys, agreement with accounting, bad input."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import dp_accounting
import pytest

from fedmodel.errors import ConfigError
from fedmodel.privacy import accounting, budget_cli
from fedmodel.privacy.accounting import FixedSizeSampling, dp_event, epsilon, steps_event
from fedmodel.privacy.budget import CURVE_POINTS, BudgetPlan, plan_budget
from fedmodel.privacy.calibration import calibrate_noise_multiplier
from fedmodel.privacy.report import render

ROOT = Path(__file__).resolve().parents[2]
CENTRAL = ["--examples", "60000", "--batch-size", "256", "--epochs", "60"]
CENTRAL += ["--noise-multiplier", "1.1", "--delta", "1e-5"]
FEDERATED = ["--clients", "1000", "--clients-per-round", "50", "--rounds", "100"]
FEDERATED += ["--noise-multiplier", "1.0", "--delta", "1e-6"]
TARGET = ["--examples", "60000", "--batch-size", "256", "--epochs", "60"]
TARGET += ["--target-epsilon", "3", "--delta", "1e-5"]


def _main_has_budget() -> bool:
    from fedmodel import cli

    parser = cli.build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return any("budget" in a.choices for a in subs)


def run_cli(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``fedmodel budget ARGV`` via fedmodel.cli.main once it is wired, else a parser with register()."""
    if _main_has_budget():
        from fedmodel.cli import main

        code = main(["budget", *argv])
    else:
        parser = argparse.ArgumentParser(prog="fedmodel")
        budget_cli.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["budget", *argv])
        try:
            code = args.func(args)
        except ConfigError as err:
            print(f"fedmodel: error: {err}", file=sys.stderr)
            code = 2
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def central_report():  # type: ignore[no-untyped-def]
    return plan_budget(BudgetPlan(examples=60000, batch_size=256, epochs=60, noise_multiplier=1.1, delta=1e-5))


def test_central_plan_conventions(central_report) -> None:  # type: ignore[no-untyped-def]
    r = central_report
    assert (r.unit, r.sampling_rate, r.steps, r.steps_per_epoch) == (
        "example",
        256 / 60000,
        14063,
        60000 / 256,
    )
    assert "add-or-remove-one-example" in r.adjacency and "Poisson" in r.sampling and "Poisson" in r.bound
    event = dp_event(noise_multiplier=1.1, sampling_rate=256 / 60000, steps=14063)
    for name in ("rdp", "pld"):
        assert r.epsilon[name] == epsilon(event, delta=1e-5, accountant=name)  # type: ignore[arg-type]
    assert len(r.curve) == CURVE_POINTS and r.curve[-1].at == 60 and r.curve[-1].epsilon == r.epsilon
    rdp = [p.epsilon["rdp"] for p in r.curve]
    assert rdp == sorted(rdp) and r.warnings == () and not r.calibrated


@pytest.mark.parametrize("fmt", ["table", "markdown"])
def test_rendered_report_states_unit_adjacency_sampling_accountant(central_report, fmt: str) -> None:  # type: ignore[no-untyped-def]
    text = render(central_report, fmt)  # type: ignore[arg-type]
    for needle in (
        "example",
        "add-or-remove-one-example",
        "Poisson",
        "RdpAccountant",
        "PLDAccountant",
        "epoch",
    ):
        assert needle in text
    assert f"{central_report.epsilon['rdp']:.4f}" in text and f"{central_report.epsilon['pld']:.4f}" in text
    if fmt == "markdown":
        assert "| epoch | steps | epsilon (rdp) | epsilon (pld) |" in text


def test_three_example_commands(capsys: pytest.CaptureFixture[str]) -> None:
    keys = {
        "epsilon",
        "delta",
        "noise_multiplier",
        "sampling_rate",
        "steps",
        "unit",
        "calibrated",
        "accountants",
    }
    keys |= {"adjacency", "sampling", "curve", "warnings"}
    results = {}
    for name, argv in (("central", CENTRAL), ("federated", FEDERATED), ("target", TARGET)):
        code, out, err = run_cli([*argv, "--format", "json"], capsys)
        assert code == 0, err
        data = json.loads(out)
        assert keys <= data.keys()
        assert set(data["epsilon"]) == {"rdp", "pld"} and data["accountants"] == ["rdp", "pld"]
        results[name] = data
    assert results["central"]["unit"] == "example" and results["central"]["steps"] == 14063
    fed = results["federated"]
    assert fed["unit"] == "client" and fed["sampling_rate"] == 0.05 and fed["steps"] == 100
    assert fed["sampling"].startswith("Poisson subsampling") and "fixed" not in fed["sampling"]
    assert fed["client_sampling"] == "poisson" and "add-or-remove-one-client" in fed["bound"]
    event = dp_event(noise_multiplier=1.0, sampling_rate=0.05, steps=100)
    for name in ("rdp", "pld"):
        assert fed["epsilon"][name] == epsilon(event, delta=1e-6, accountant=name)  # type: ignore[arg-type]
    target = results["target"]
    assert target["calibrated"] is True and target["calibrated_with"] == "pld"  # the tighter bound here
    assert target["epsilon"]["pld"] <= 3.0 < target["epsilon"]["rdp"]
    assert target["noise_multiplier"] < 1.1  # z = 1.1 reaches 2.6 < 3
    assert results["central"]["calibrated_with"] is None


def test_single_accountant_and_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli([*FEDERATED, "--accountant", "pld", "--format", "json"], capsys)
    assert code == 0 and set(json.loads(out)["epsilon"]) == {"pld"}
    code, out, _ = run_cli([*FEDERATED, "--accountant", "rdp"], capsys)
    assert code == 0 and "round" in out and "client" in out
    assert "epsilon (rdp)" in out and "epsilon (pld)" not in out


def test_calibration_uses_the_tightest_accountant() -> None:
    plan = BudgetPlan(clients=500, clients_per_round=25, rounds=50, target_epsilon=2.0, delta=1e-6)
    report = plan_budget(plan)
    single = {
        name: calibrate_noise_multiplier(target_epsilon=2.0, delta=1e-6, sampling_rate=0.05, steps=50, accountant=name)
        for name in ("rdp", "pld")
    }
    # both are valid upper bounds: the smaller noise multiplier suffices (not the larger one)
    assert report.noise_multiplier == min(single.values()) < max(single.values())
    assert report.calibrated_with == min(single, key=single.__getitem__) == "pld"
    assert report.epsilon["pld"] <= 2.0 < report.epsilon["rdp"]  # every accountant's epsilon is still shown
    rdp_only = plan_budget(
        BudgetPlan(clients=500, clients_per_round=25, rounds=50, target_epsilon=2.0, delta=1e-6, accountants=("rdp",))
    )
    assert rdp_only.noise_multiplier == single["rdp"] and rdp_only.calibrated_with == "rdp"
    assert "calibrated with pld" in render(report) and "calibrated with rdp" in render(rdp_only, "markdown")


def test_mnist_target_0_1_uses_the_tighter_noise() -> None:
    # the old calibration took the looser bound: noise 45.3 (PLD on a 1e-3 grid) where RDP needs 17.2
    report = plan_budget(BudgetPlan(examples=60000, batch_size=256, epochs=60, target_epsilon=0.1, delta=1e-5))
    rdp_only = plan_budget(
        BudgetPlan(examples=60000, batch_size=256, epochs=60, target_epsilon=0.1, delta=1e-5, accountants=("rdp",))
    )
    assert report.noise_multiplier <= rdp_only.noise_multiplier < 17.3
    assert report.epsilon[report.calibrated_with or ""] <= 0.1


def test_fixed_size_federated_plan_uses_the_replace_one_bound(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--clients", "1000", "--clients-per-round", "50", "--rounds", "100", "--client-sampling", "fixed-size"]
    code, out, err = run_cli([*argv, "--noise-multiplier", "2.0", "--delta", "1e-6", "--format", "json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["accountants"] == ["rdp"] and list(data["epsilon"]) == ["rdp"]  # "all" means all that apply
    assert data["client_sampling"] == "fixed-size" and data["adjacency"].startswith("replace-one-client")
    assert "without replacement" in data["sampling"] and "Wang et al. 2019" in data["bound"]
    event = steps_event(dp_accounting.GaussianDpEvent(2.0), FixedSizeSampling(population=1000, size=50), steps=100)
    assert data["epsilon"]["rdp"] == epsilon(event, delta=1e-6, accountant="rdp")
    poisson = epsilon(dp_event(noise_multiplier=2.0, sampling_rate=0.05, steps=100), delta=1e-6, accountant="rdp")
    assert data["epsilon"]["rdp"] > poisson  # replace-one doubles the sensitivity
    code, out, _ = run_cli([*argv, "--noise-multiplier", "2.0", "--delta", "1e-6"], capsys)
    assert code == 0 and "replace-one-client" in out and "50 of 1000" in out and "epsilon (pld)" not in out
    code, out, _ = run_cli([*argv, "--target-epsilon", "3", "--delta", "1e-6", "--format", "json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["calibrated_with"] == "rdp" and data["epsilon"]["rdp"] <= 3.0


def test_fixed_size_plan_refuses_pld(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--clients", "100", "--clients-per-round", "10", "--rounds", "5", "--client-sampling", "fixed-size"]
    code, out, err = run_cli([*argv, "--noise-multiplier", "1.0", "--accountant", "pld"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("fedmodel: error: pld does not support fixed-size sampling; use rdp")
    with pytest.raises(ConfigError, match="applies to federated plans"):
        BudgetPlan(examples=100, batch_size=10, epochs=1, noise_multiplier=1.0, client_sampling="fixed-size")
    with pytest.raises(ConfigError, match="client_sampling must be one of poisson, fixed-size, got 'shuffle'"):
        BudgetPlan(clients=10, clients_per_round=2, rounds=1, noise_multiplier=1.0, client_sampling="shuffle")  # type: ignore[arg-type]


def test_accountant_failures_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # previously a raw dp-accounting traceback ("Renyi divergence cannot be negative"); now fixed at the
    # source, so force a failure inside dp-accounting to check the path from there to the command line
    argv = ["--clients", "1000000", "--clients-per-round", "1", "--rounds", "1000", "--noise-multiplier", "50"]
    code, out, err = run_cli([*argv, "--delta", "1e-7", "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["epsilon"]["rdp"] >= 0

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("Renyi divergence cannot be negative. Found -4.8e-15.")

    monkeypatch.setattr(dp_accounting.rdp.rdp_privacy_accountant, "compute_epsilon", broken)
    code, out, err = run_cli([*argv, "--delta", "1e-7", "--accountant", "rdp"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("fedmodel: error: the rdp accountant") and "cannot be negative" in err and "try" in err
    assert issubclass(accounting.AccountingError, ConfigError)


def test_delta_warning_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--clients", "100", "--clients-per-round", "10", "--rounds", "5", "--noise-multiplier", "1.0"]
    code, out, err = run_cli([*argv, "--delta", "0.01", "--accountant", "rdp", "--format", "json"], capsys)
    assert code == 0
    assert "warning: delta=0.01 is >= 1/100" in err
    assert any("1/100" in w for w in json.loads(out)["warnings"])


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"examples": 100, "batch_size": 101, "epochs": 1, "noise_multiplier": 1.0}, "batch_size=101"),
        (
            {"clients": 10, "clients_per_round": 11, "rounds": 1, "noise_multiplier": 1.0},
            "clients_per_round=11",
        ),
        (
            {"clients": 10, "clients_per_round": 1, "rounds": 1, "noise_multiplier": 1.0, "delta": 0.0},
            "delta",
        ),
        (
            {"clients": 10, "clients_per_round": 1, "rounds": 1, "noise_multiplier": 1.0, "delta": 1.0},
            "delta",
        ),
        ({"clients": 10, "clients_per_round": 1, "rounds": 1, "noise_multiplier": -0.5}, "-0.5"),
        ({"clients": 10, "clients_per_round": 1, "rounds": 0, "noise_multiplier": 1.0}, "rounds"),
        ({"examples": 100, "batch_size": 10, "epochs": 0, "noise_multiplier": 1.0}, "epochs"),
        ({"examples": 100, "batch_size": 0, "epochs": 1, "noise_multiplier": 1.0}, "batch_size"),
        (
            {"examples": 100, "batch_size": 10, "epochs": 1, "noise_multiplier": 1.0, "target_epsilon": 1.0},
            "exactly one",
        ),
        ({"examples": 100, "batch_size": 10, "epochs": 1}, "exactly one"),
        ({"examples": 100, "batch_size": 10, "epochs": 1, "target_epsilon": -1.0}, "target_epsilon"),
        ({"examples": 100, "batch_size": 10, "epochs": 1, "clients": 5, "noise_multiplier": 1.0}, "not both"),
        ({"examples": 100, "epochs": 1, "noise_multiplier": 1.0}, "missing batch_size"),
        ({"clients": 100, "noise_multiplier": 1.0}, "missing clients_per_round, rounds"),
        (
            {
                "examples": 100,
                "batch_size": 10,
                "epochs": 1,
                "noise_multiplier": 1.0,
                "accountants": ("gdp",),
            },
            "gdp",
        ),
    ],
)
def test_bad_plans_raise_config_error(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        BudgetPlan(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (
            ["--examples", "100", "--batch-size", "200", "--epochs", "1", "--noise-multiplier", "1"],
            "batch_size=200",
        ),
        ([*FEDERATED, "--examples", "5"], "not both"),
        (["--clients", "10", "--clients-per-round", "2", "--rounds", "3"], "exactly one"),
        ([], "needs a plan"),
        (["report"], "RUN_DIR"),
        (["report", "somewhere", "--rounds", "3"], "--rounds"),
    ],
)
def test_bad_commands_exit_2_with_one_line(argv: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith("fedmodel: error:") and named in err and err.count("\n") == 1


def test_unknown_action_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run_cli(["repotr", "x"], capsys)
    assert exc.value.code == 2


def test_budget_command_does_not_import_tensorflow() -> None:
    code = (
        "import argparse, sys\nfrom fedmodel.privacy import budget_cli\n"
        "p = argparse.ArgumentParser(); budget_cli.register(p.add_subparsers())\n"
        f"a = p.parse_args(['budget', *{FEDERATED!r}, '--accountant', 'rdp']); a.func(a)\n"
        "print('TF' if 'tensorflow' in sys.modules else 'NOTF', file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "NOTF"


def test_zero_noise_plan_is_infinite_and_warned() -> None:
    report = plan_budget(BudgetPlan(clients=100, clients_per_round=10, rounds=3, noise_multiplier=0.0, delta=1e-4))
    assert report.epsilon == {"rdp": math.inf, "pld": math.inf}
    assert report.to_json_dict()["epsilon"] == {"rdp": "inf", "pld": "inf"}
    assert any("not differentially private" in w for w in report.warnings)
