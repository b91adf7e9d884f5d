"""Training logs never replace a complete log before the new run has succeeded."""

from __future__ import annotations

import json
from types import SimpleNamespace

from pointvl.train.logs import MetricsLogger


def state(step=0):
    return SimpleNamespace(is_world_process_zero=True, global_step=step)


def test_a_failed_run_leaves_the_previous_log_whole(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(101)))
    before = log.read_text()
    lg = MetricsLogger(log, tmp_path / "log.csv")
    lg.on_train_begin(None, state(), None)
    lg.on_log(None, state(1), None, logs={"loss": 0.5})
    # the run dies here: the complete log of the earlier run is untouched
    assert log.read_text() == before and lg.partial.read_text().count("\n") == 1


def test_success_replaces_the_log_and_writes_both_csvs(tmp_path):
    log = tmp_path / "log.jsonl"
    lg = MetricsLogger(log, tmp_path / "log.csv")
    lg.on_train_begin(None, state(), None)
    lg.on_log(None, state(1), None, logs={"loss": 0.5, "reward/seq": 0.3})
    lg.write({"step": 1, "val/n": 8, "val/reward/seq": 0.4})
    lg.on_train_end(None, state(1), None)
    assert not lg.partial.exists() and len(log.read_text().splitlines()) == 2
    assert (tmp_path / "log.csv").read_text().startswith("step,")
    val = (tmp_path / "val.csv").read_text().splitlines()
    assert val[0] == "step,val/n,val/reward/seq" and val[1] == "1,8,0.4"


def test_resume_keeps_records_up_to_the_checkpoint(tmp_path):
    lg = MetricsLogger(tmp_path / "log.jsonl")
    lg.partial.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 6)))
    lg.on_train_begin(None, state(3), None)  # resumed from checkpoint-3
    assert [json.loads(x)["step"] for x in lg.partial.read_text().splitlines()] == [1, 2, 3]
