"""The shipped trained checkpoint (checkpoints/avtask) still answers: exported to an engine, it gets
the recorded share of a small fixed held-out subset right, and agrees with the PyTorch reference;
the accuracy arithmetic and the task-eval command's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vinci_edge.avtask.speech import espeak_available
from vinci_edge.evaluation.task_eval import accuracy, wilson

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "avtask"
CI_SUBSET = SHIPPED / "ci_subset.json"
RECORD = json.loads(CI_SUBSET.read_text()) if CI_SUBSET.exists() else None
needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


def test_the_checkpoint_is_shipped_with_its_record():
    assert (SHIPPED / "config.json").is_file() and (SHIPPED / "llm" / "tokenizer.json").is_file()
    record = json.loads((SHIPPED / "training_record.json").read_text())
    recipe = record["recipe"]  # steps: the towers' phase and the joint one, unless stopped early
    assert record["steps"] == record.get("stopped_at", recipe.get("tower_steps", 0) + recipe["steps"])
    assert RECORD is not None and RECORD["n"] >= 50


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    from vinci_edge.avtask.dataset import held_out_seeds, write_split

    folder = tmp_path_factory.mktemp("subset")
    write_split(folder, held_out_seeds(RECORD["clips"]))
    return folder


@pytest.fixture(scope="module")
def shipped_engine(tmp_path_factory):
    from vinci_edge.export.engine import export_engine

    out = tmp_path_factory.mktemp("engine") / "avtask"
    export_engine(SHIPPED, out)
    return out


@needs_espeak
def test_the_exported_engine_reaches_the_recorded_accuracy(subset, shipped_engine):
    from vinci_edge.evaluation.answerers import EngineAnswerer, ReferenceAnswerer
    from vinci_edge.evaluation.task_eval import agreement, evaluate

    engine = evaluate(subset, EngineAnswerer("fp32", shipped_engine))
    # One question of slack: another CPU's float rounding may flip one near-tied greedy answer.
    assert sum(s.right for s in engine) >= RECORD["right"] - 1, accuracy(engine)["overall"]
    reference = evaluate(subset, ReferenceAnswerer("reference", SHIPPED))
    assert agreement(engine, reference)["same_answer"] >= len(engine) - 1


@needs_espeak
def test_the_report_says_which_cpu_answered(subset, shipped_engine, tmp_path):
    """int8-compute's answers depend on the CPU's integer GEMM (runtime/integer_gemm.py): the
    report records the CPU, ONNX Runtime and the check's verdicts beside the accuracies."""
    from vinci_edge.cli import run
    from vinci_edge.host import cpu_name
    from vinci_edge.runtime.integer_gemm import FULL_LEVELS, check_integer_gemm

    out = tmp_path / "report"
    argv = ["task-eval", "--split", str(subset), "--clips", "1", "--engine", f"fp32={shipped_engine}"]
    assert run([*argv, "--out", str(out)]) == 0
    machine = json.loads((out / "task_accuracy.json").read_text())["machine"]
    assert machine["cpu"] == cpu_name()
    exact = {"reduced": check_integer_gemm(63).exact, "full": check_integer_gemm(FULL_LEVELS).exact}
    assert machine["integer_gemm_exact"] == exact
    assert f"Machine: {cpu_name()}, ONNX Runtime" in (out / "task_accuracy.md").read_text()


def test_wilson_interval_matches_known_values():
    lo, hi = wilson(90, 100)
    assert lo == pytest.approx(0.8256, abs=1e-4) and hi == pytest.approx(0.9448, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


def test_accuracy_groups_by_category_and_template():
    from vinci_edge.evaluation.task_eval import Scored

    scored = [
        Scored("c", 1, "vision", "colour_of_shape", "q", "red", "red", True),
        Scored("c", 1, "vision", "count_shapes", "q", "2", "3", False),
        Scored("c", 1, "time", "alarm_second", "q", "4", "4", True),
    ]
    acc = accuracy(scored)
    assert acc["overall"]["right"] == 2 and acc["overall"]["n"] == 3
    assert acc["categories"]["vision"]["accuracy"] == 0.5
    assert acc["templates"]["alarm_second"]["accuracy"] == 1.0


def test_the_report_puts_each_side_of_the_comparison_under_its_name():
    """A run that gains on the baseline shows more questions "only run right" than "only baseline
    right" (the paired counts agree with the change in accuracy)."""
    from vinci_edge.evaluation.report import markdown
    from vinci_edge.evaluation.task_eval import Scored, agreement

    def scored(rights):
        return [
            Scored("c", 1, "vision", "count_shapes", f"q{i}", "2", "2" if r else "3", r)
            for i, r in enumerate(rights)
        ]

    base, run = scored([True, False, False, False]), scored([True, True, True, False])
    report = {
        "split": {"questions": 4, "clips": 1, "generator_version": 1},
        "runs": [{"name": "base", "accuracy": accuracy(base)}, {"name": "run", "accuracy": accuracy(run)}],
        "baseline": "base",
        "agreement": {"run": agreement(run, base)},  # as task-eval calls it
    }
    row = next(line for line in markdown(report).splitlines() if line.startswith("| run | +"))
    assert row == "| run | +50.0 | - | 2/4 | 0 | 2 |"


def test_task_eval_refuses_bad_requests_in_one_line(tmp_path, capsys):
    from vinci_edge.cli import run

    split = tmp_path / "split"
    split.mkdir()
    (split / "split.json").write_text('{"generator_version": 1}')
    assert run(["task-eval", "--split", str(split), "--out", str(tmp_path / "r")]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert run(["task-eval", "--split", str(tmp_path), "--checkpoint", "x", "--out", "r"]) == 2
    assert "is not a task split" in capsys.readouterr().err
    bad = ["task-eval", "--split", str(split), "--engine", "nonsense", "--out", "r"]
    assert run(bad) == 2
    assert "is not NAME=FOLDER" in capsys.readouterr().err
    assert run(["task-split", "--out", str(tmp_path / "s"), "--start", "99999", "--clips", "5"]) == 2
    assert "runs past" in capsys.readouterr().err
