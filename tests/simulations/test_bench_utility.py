"""The utility benchmark: which runs it makes, how it summarises seeds, and that finished runs are reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations import bench_utility as bu


def _values(args: tuple[str, ...]) -> dict[str, str]:
    return dict(a.split("=", 1) for i, a in enumerate(args) if i and args[i - 1] == "--set")


def test_jobs_cover_every_setting_and_seed_with_the_stated_settings(tmp_path: Path) -> None:
    jobs = bu.jobs_for(["digits", "shakespeare"], [0, 1, 2], root=tmp_path, rounds=None, epochs=None, only=None)
    names = {(j.dataset, j.setting.name) for j in jobs}
    assert {n for d, n in names if d == "digits"} == {
        "central", "FedAvg IID", "FedAvg Dirichlet 0.1", "FedAvg Dirichlet 1.0", "DP-FedAvg", "DP-FTRL",
    }  # fmt: skip
    assert {n for d, n in names if d == "shakespeare"} == {
        "central", "FedAvg IID", "FedAvg per speaker", "DP-FedAvg", "DP-FTRL",
    }  # fmt: skip
    assert len(jobs) == 3 * len(names) and len({j.run_dir for j in jobs}) == len(jobs)
    for job in jobs:
        if job.setting.central:
            assert job.args[0] == "train" and job.args[job.args.index("--seed") + 1] == str(job.seed)
            continue
        values = _values(job.args)
        assert values["seed"] == str(job.seed) and values["dataset"] == job.dataset
        if job.setting.name.startswith("DP"):
            assert (values["dp-noise"], values["dp-clip"], values["clients-per-round"]) == ("1.0", "1.0", "50")
            assert ("dp-ftrl" in values) == (job.setting.name == "DP-FTRL")
        else:
            assert "dp-noise" not in values
        if job.dataset == "shakespeare":
            assert values["model"] == "lstm" and values["data-path"] == str(bu.SHAKESPEARE_TEXT)
            assert "../shared/data/tinyshakespeare.txt" in job.shown_command()
        if "Dirichlet 0.1" in job.setting.name:
            assert (values["partition"], values["alpha"]) == ("dirichlet", "0.1")
    quick = bu.jobs_for(["digits"], [0], root=tmp_path, rounds=2, epochs=2, only=["central", "DP-FTRL"])
    assert [j.setting.name for j in quick] == ["central", "DP-FTRL"]
    assert quick[0].args[quick[0].args.index("--epochs") + 1] == "2" and _values(quick[1].args)["rounds"] == "2"


def test_cells_show_mean_sample_std_failures_and_epsilon() -> None:
    runs = [bu.Result("digits", "DP-FTRL", s, accuracy=a, epsilon=3.5, delta=1e-3) for s, a in enumerate((0.5, 0.7))]
    assert bu.cell(runs) == "0.600 ± 0.141 (ε=3.50)"
    runs.append(bu.Result("digits", "DP-FTRL", 2, error="exit status 1"))
    assert bu.cell(runs) == "0.600 ± 0.141 (2/3 seeds) (ε=3.50)"
    assert bu.cell([bu.Result("digits", "central", 0, error="x")]) == "failed"
    table = bu.tables(runs, ["digits", "mnist5k"])
    assert "| DP-FTRL | 0.600 ± 0.141 (2/3 seeds) (ε=3.50) | n/a |" in table
    assert "0: 0.5000, 1: 0.7000, 2: failed" in table


def test_a_finished_run_is_reused_without_a_process(tmp_path: Path) -> None:
    job = bu.jobs_for(["digits"], [0], root=tmp_path, rounds=2, epochs=2, only=["DP-FedAvg"])[0]
    job.run_dir.mkdir(parents=True)
    output = {"final": {"accuracy": 0.8125}, "privacy": {"epsilon": {"rdp": 4.5}, "delta": 1e-3}}
    (job.run_dir / "bench_result.json").write_text(json.dumps({"output": output, "seconds": 12.0}))
    result = bu.run_job(job, timeout=1)  # no process: a timeout of 1 s would fail any real run
    assert (result.accuracy, result.epsilon, result.delta, result.seconds) == (0.8125, 4.5, 1e-3, 12.0)


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, expected in ((["--datasets", "cifar"], "got cifar"), (["--only", "FedProx"], "got FedProx"),
                           (["--seeds", "a,b"], "comma-separated integers")):  # fmt: skip
        with pytest.raises(SystemExit):
            bu.parse_args(argv)
        assert expected in capsys.readouterr().err
    quick = bu.parse_args(["--quick"])
    assert (quick.datasets, quick.seeds, quick.rounds, quick.epochs) == (["digits"], [0], 2, 2)


def test_plot_has_one_panel_per_dataset(tmp_path: Path) -> None:
    runs = [bu.Result(d, n, s, accuracy=0.5 + 0.1 * s) for d in ("digits", "mnist5k") for n in ("central", "DP-FTRL")
            for s in range(3)]  # fmt: skip
    runs.append(bu.Result("mnist5k", "FedAvg IID", 0, error="x"))  # a failed row draws no bar and no error
    png = bu.plot(runs, ["digits", "mnist5k"], tmp_path / "sub" / "utility_accuracy.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_rows_no_better_than_the_most_frequent_label_are_marked() -> None:
    runs = [bu.Result("shakespeare", "FedAvg IID", s, accuracy=0.1637) for s in range(3)]
    runs += [bu.Result("shakespeare", "central", s, accuracy=0.37) for s in range(3)]
    table = bu.tables(runs, ["shakespeare"], {"shakespeare": 0.1637})
    assert "| most frequent label (no training) | 0.164 |" in table
    assert f"| FedAvg IID | 0.164 ± 0.000 {bu.LEARNED_NOTHING} |" in table and "| central | 0.370 ± 0.000 |" in table
    assert "learned only the label frequencies" in table
    assert bu.LEARNED_NOTHING not in bu.tables(runs[3:], ["shakespeare"], {"shakespeare": 0.1637})


def test_the_most_frequent_label_rate_of_the_embedded_sets() -> None:
    assert bu.majority_accuracy("mnist5k") == pytest.approx(0.1)  # a class-balanced test split
    assert 0.1 <= bu.majority_accuracy("digits") < 0.11
