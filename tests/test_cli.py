"""The ``adamkit`` command: exit codes, one-line errors, the report, Ctrl-C, ``demo``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import adamkit.cli as cli
from adamkit.lab import MODULES, experiment
from adamkit.lab.experiments import variants
from adamkit.lab.frame import Experiment


def fake(name: str, interrupt: bool = False) -> Experiment:
    def run(settings):
        if interrupt:
            raise KeyboardInterrupt
        return {"value": settings.seed, "mode": settings.mode}

    def plot(numbers, folder):
        (folder / "fake.png").write_bytes(b"\x89PNG")
        return ["fake.png"]

    return Experiment(
        name=name,
        claim=f"{name} claims",
        paper=f"{name} paper",
        run=run,
        plot=plot,
        verdict=lambda numbers: ("partly", f"value {numbers['value']}"),
    )


@pytest.fixture
def fakes(monkeypatch):
    """Three fast experiments in place of the real ones; the third is interrupted."""
    registry = {"one": fake("one"), "two": fake("two"), "stop": fake("stop", interrupt=True)}
    monkeypatch.setattr(cli, "MODULES", dict.fromkeys(registry))
    monkeypatch.setattr(cli, "experiment", registry.__getitem__)
    return registry


def test_list_names_every_experiment_with_its_claim(capsys):
    assert cli.main(["lab", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(MODULES)
    for line, name in zip(lines, MODULES, strict=True):
        assert experiment(name).claim in line


@pytest.mark.parametrize(
    "argv, words",
    [
        (["lab", "run", "nope"], "unknown experiment 'nope'"),
        (["lab", "run", "reddi", "--seed", "-x"], "--seed"),
        (["lab", "run", "reddi", "--seed", "-3"], "invalid seed '-3'"),
        (["lab", "run", "reddi", "--seed", "1.5"], "invalid seed '1.5'"),
        (["lab", "run", "reddi", "--seed", "2147483648"], "from 0 to 2147483647"),
        (["lab", "run", "reddi", "--quick", "--full"], "not allowed with"),
        (["lab", "frobnicate"], "invalid choice"),
        (["demo", "--colour"], "unrecognized arguments"),
        ([], "required"),
    ],
)
def test_bad_input_is_one_line_and_status_2(argv, words, capsys):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("adamkit: error: ")
    assert words in captured.err
    assert captured.out == ""


def test_output_path_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("x")
    assert cli.main(["lab", "run", "reddi", "--out", str(path)]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_output_folder_that_cannot_be_created(capsys):
    """/proc takes no new folders, not even from root."""
    assert cli.main(["lab", "run", "reddi", "--out", "/proc/adamkit-lab/sub"]) == 2
    assert "cannot create output folder" in capsys.readouterr().err


def test_the_module_entry_point_never_shows_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "adamkit", "lab", "run", "nope", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


def test_run_writes_results_and_the_index(fakes, tmp_path, capsys):
    assert (
        cli.main(["lab", "run", "two", "one", "--full", "--seed", "7", "--out", str(tmp_path)]) == 0
    )
    for name in ("one", "two"):
        record = json.loads((tmp_path / name / "result.json").read_text())
        assert record["numbers"] == {"value": 7, "mode": "full"}
        assert record["verdict"] == "partly" and record["summary"] == "value 7"
        assert (tmp_path / name / "fake.png").exists()
    index = (tmp_path / "index.html").read_text()
    assert index.index('id="one"') < index.index('id="two"')  # the registry's order
    assert "one claims" in index and "two paper" in index and 'src="one/fake.png"' in index
    assert "report:" in capsys.readouterr().out


def test_ctrl_c_keeps_what_finished(fakes, tmp_path, capsys):
    assert cli.main(["lab", "run", "one", "stop", "two", "--out", str(tmp_path)]) == 130
    index = (tmp_path / "index.html").read_text()
    assert 'id="one"' in index and 'id="stop"' not in index and 'id="two"' not in index
    assert "interrupted: 1 experiment(s) finished" in capsys.readouterr().err


def test_demo_runs_every_experiment_quick(fakes, monkeypatch, tmp_path):
    del fakes["stop"]
    monkeypatch.setattr(cli, "MODULES", dict.fromkeys(fakes))
    assert cli.main(["demo", "--out", str(tmp_path)]) == 0
    for name in fakes:
        assert json.loads((tmp_path / name / "result.json").read_text())["mode"] == "quick"
    assert Path(tmp_path / "index.html").read_text().count("<section") == len(fakes)


def test_an_interrupted_rerun_leaves_no_earlier_record(fakes, tmp_path):
    """A finished run of "stop", then a rerun interrupted: the report must not show the
    earlier numbers as if they were the rerun's."""
    fakes["stop"] = fake("stop")
    assert cli.main(["lab", "run", "stop", "--out", str(tmp_path)]) == 0
    fakes["stop"] = fake("stop", interrupt=True)
    assert cli.main(["lab", "run", "stop", "--out", str(tmp_path)]) == 130
    assert not (tmp_path / "stop" / "result.json").exists()
    assert 'id="stop"' not in (tmp_path / "index.html").read_text()


def test_foreign_files_in_the_output_folder(fakes, tmp_path, capsys):
    """A result.json that is not one of ours is left out of the report; a file where an
    experiment's folder should be is a one-line error."""
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "result.json").write_text("[1, 2]")
    (tmp_path / "two").write_text("not a folder")
    assert cli.main(["lab", "run", "one", "--out", str(tmp_path)]) == 0
    assert 'id="other"' not in (tmp_path / "index.html").read_text()
    assert cli.main(["lab", "run", "two", "--out", str(tmp_path)]) == 2
    assert "cannot write the results" in capsys.readouterr().err


def test_mnist_needs_its_folder(tmp_path, capsys):
    assert cli.main(["lab", "run", "variants", "--dataset", "mnist", "--out", str(tmp_path)]) == 2
    assert "--data PATH is needed" in capsys.readouterr().err


def test_a_bad_data_file_is_named_before_anything_runs(tmp_path, capsys):
    from test_lab_data import corrupt_truncated, write_mnist

    write_mnist(tmp_path)
    bad = corrupt_truncated(tmp_path)
    argv = ["lab", "run", "variants", "--dataset", "mnist", "--data", str(tmp_path)]
    assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(bad) in error
    assert not (tmp_path / "out" / "variants").exists()


def test_a_training_experiment_runs_on_mnist_files(tmp_path):
    """variants on tiny MNIST files the test writes: the record names the data set."""
    from test_lab_data import write_mnist

    write_mnist(tmp_path)
    argv = ["lab", "run", "variants", "--dataset", "mnist", "--data", str(tmp_path)]
    assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "variants" / "result.json").read_text())
    assert record["dataset"] == "mnist"
    assert set(record["numbers"]["optimizers"]) == set(variants.OPTIMIZERS)
