"""DomainBed model selection and statistics over hand-built trial records (no Ray): what each selection
chooses and reports, ties, errored trials, the zero-shot row, and collect_results' cells and Avg."""

from __future__ import annotations

import pytest

from reasonbed.tune.records import TrialRecord
from reasonbed.tune.selection import Choice, errored_summary, format_avg, format_mean, results_table, select


def _report(step: int, val: float, test: float, out: float | None = None, **extra) -> dict:
    row = {"step": step, "total_steps": 4, "val_acc": val, "test_acc": test, "select_on": "direct", **extra}
    if out is not None:
        row["test_out_acc"] = out
    return row


def _record(trial_id: str, reports: list, status: str = "completed", seed: int = 0, domain: str = "photo",
            method: str = "direct", **fields) -> TrialRecord:
    return TrialRecord("s", method, domain, seed, trial_id, {"optim.lr": 1e-3}, reports, status, **fields)


def test_leave_one_domain_out_selection_reads_the_held_out_runs():
    """The trial with the best mean accuracy over its held-out source domains wins, whatever its val_acc or
    test_acc; trials missing a held-out run, or stopped early, are no candidates; none at all gives X."""
    sources = ["art", "cartoon", "sketch"]

    def record(trial_id: str, val: float, test: float, heldout: dict, status: str = "completed") -> TrialRecord:
        reports = [{**_report(4, val, test), "time_total_s": 10.0}]
        return _record(trial_id, reports, status, lodo={"sources": sources, "heldout_acc": heldout, "seconds": 20.0})

    records = [record("a", 0.9, 0.9, {"art": 0.2, "cartoon": 0.3, "sketch": 0.1}),
               record("b", 0.1, 0.2, {"art": 0.6, "cartoon": 0.5, "sketch": 0.4}),
               record("c", 0.5, 0.5, {"art": 0.9, "cartoon": 0.9}),  # one held-out run missing
               record("d", 0.5, 0.5, {"art": 1.0, "cartoon": 1.0, "sketch": 1.0}, status="stopped")]
    choice = select(records, "leave_one_domain_out")[("direct", "photo", 0)]
    assert (choice.trial_id, choice.step, choice.test_acc) == ("b", 4, 0.2)
    assert choice.score == pytest.approx(0.5) and choice.val_acc == pytest.approx(0.1)
    assert records[0].seconds == pytest.approx(30.0), "the held-out runs count in the trial's cost"
    assert select(records)[("direct", "photo", 0)].trial_id == "a", "training-domain validation differs"
    bare = [_record(r.trial_id, r.reports) for r in records]
    assert select(bare, "leave_one_domain_out")[("direct", "photo", 0)] is None
    row = results_table(bare, ["photo"], "leave_one_domain_out")[0]
    assert format_mean(row.cells["photo"]) == "X" and format_avg(row) == "X"


def test_training_domain_reports_test_in_part_and_oracle_picks_on_the_out_part():
    """Training-domain validation: best val_acc over all trials and checkpoints, reporting test_acc (in part).
    Oracle: each trial's last checkpoint, chosen by test_out_acc, reporting test_acc - never by test_acc itself."""
    records = [_record("a", [_report(2, 0.2, 0.3, 0.35), _report(4, 0.6, 0.4, 0.30)]),
               _record("b", [_report(2, 0.5, 0.9, 0.99), _report(4, 0.5, 0.95, 0.50)]),  # best test_acc, worse out
               _record("c", [_report(2, 0.1, 0.1, 0.10), _report(4, 0.1, 0.2, 0.80)])]
    honest = select(records)[("direct", "photo", 0)]
    assert (honest.trial_id, honest.step, honest.test_acc, honest.select_on) == ("a", 4, 0.4, "direct")
    oracle = select(records, "oracle")[("direct", "photo", 0)]
    assert isinstance(oracle, Choice) and (oracle.trial_id, oracle.step) == ("c", 4)
    assert (oracle.score, oracle.test_acc) == (0.80, 0.2), "picked on the out part, reported on the in part"
    assert results_table(records, ["photo"])[0].cells["photo"].values == (0.4,)
    old = [_record("z", [_report(4, 0.5, 0.5)])]  # a report from before the test domain was split
    assert select(old, "oracle")[("direct", "photo", 0)] is None


def test_ties_go_to_the_later_checkpoint_then_the_later_draw():
    """Ray keeps the later of two equally scored checkpoints (and always the latest): the choice is one Ray kept.
    Across trials the later draw wins, as the larger hparams_seed does in DomainBed (Tune's trial ids are random)."""
    records = [_record("f00d", [_report(2, 0.7, 0.1), _report(4, 0.7, 0.2), _report(6, 0.5, 0.3)], draw=0),
               _record("beef", [_report(2, 0.6, 0.4)], draw=1)]
    choice = select(records)[("direct", "photo", 0)]
    assert (choice.trial_id, choice.step) == ("f00d", 4)
    tied = [_record("f00d", [_report(4, 0.7, 0.1, 0.6)], draw=1), _record("beef", [_report(4, 0.7, 0.2, 0.6)], draw=0)]
    assert select(tied)[("direct", "photo", 0)].trial_id == "f00d", "draw 1 is later than draw 0, whatever the ids"
    assert select(tied, "oracle")[("direct", "photo", 0)].trial_id == "f00d"
    unnumbered = [_record("a1", [_report(4, 0.7, 0.1)]), _record("b2", [_report(4, 0.7, 0.2)])]
    assert select(unnumbered)[("direct", "photo", 0)].trial_id == "b2", "without draw numbers: the larger id"


def test_errored_trials_valid_reports_stay_candidates():
    records = [_record("a", [_report(2, 0.5, 0.5)]),
               _record("b", [_report(2, 0.9, 0.7, 0.6), {"step": 4, "val_acc": float("nan"), "test_acc": 0.1}],
                       status="errored"),
               _record("c", [], status="errored")]
    records[1].reports = records[1].reports[:1]  # what load_records keeps: the valid reports only
    chosen = select(records)
    choice = chosen[("direct", "photo", 0)]
    assert choice.trial_id == "b" and choice.errored and choice.test_acc == 0.7
    assert select(records, "oracle")[("direct", "photo", 0)].trial_id == "b"
    assert errored_summary(records, chosen) == {"errored": 2, "errored_candidates": 1, "chosen_from_errored": 1}


def test_cells_are_domainbed_mean_and_standard_error_avg_is_the_mean_of_means():
    """As collect_results.format_mean: mean ± np.std(data / sqrt(n)) in percent; one seed says n=1; Avg is the
    plain mean of the per-domain means, X when a domain has no result."""
    import numpy as np

    accs = {("photo", 0): 0.50, ("photo", 1): 0.60, ("photo", 2): 0.90, ("sketch", 0): 0.40}
    records = [_record(f"t{d}{s}", [_report(4, 0.5, acc)], seed=s, domain=d) for (d, s), acc in accs.items()]
    row = results_table(records, ["photo", "sketch"])[0]
    photo = [0.50, 0.60, 0.90]
    expected_err = 100 * np.std(np.array(photo) / np.sqrt(3))
    assert format_mean(row.cells["photo"]) == f"{100 * np.mean(photo):.1f} ± {expected_err:.1f}"
    assert format_mean(row.cells["photo"]) == "66.7 ± 9.8"  # pstdev/sqrt(n); pstdev alone would say 17.0
    assert format_mean(row.cells["photo"], latex=True) == "66.7 $\\pm$ 9.8"
    assert format_mean(row.cells["sketch"]) == "40.0 (n=1)"
    assert format_avg(row) == f"{(100 * np.mean(photo) + 40.0) / 2:.1f}" == "53.3"
    missing = results_table(records, ["photo", "sketch", "cartoon"])[0]
    assert format_mean(missing.cells["cartoon"]) == "X" and format_avg(missing) == "X"


def test_zero_shot_row_leads_every_table_without_selection():
    from reasonbed.tune.records import ZERO_SHOT_ROW

    zero = [TrialRecord("zero_shot", ZERO_SHOT_ROW, "photo", s, f"zero_shot-photo-s{s}", {},
                        [_report(0, 0.3, acc, 0.9)], "completed", cpus=2, lodo={}) for s, acc in ((0, 0.25), (1, 0.35))]
    records = [_record("a", [_report(4, 0.9, 0.8, 0.1)]), _record("b", [_report(4, 0.9, 0.6, 0.1)], seed=1)]
    for selection in ("training_domain", "oracle", "leave_one_domain_out"):
        rows = results_table(records, ["photo"], selection, zero_shot=zero)
        assert rows[0].zero_shot and rows[0].method == ZERO_SHOT_ROW and rows[0].trials == 0
        assert format_mean(rows[0].cells["photo"]) == "30.0 ± 3.5" and rows[0].select_on == "direct"
        assert [row.method for row in rows[1:]] == ["direct"]


def test_a_reasoning_method_is_compared_with_the_base_model_on_its_own_prompt():
    """A row scored on the reasoning prompt gets a zero-shot row read on that prompt; direct keeps its own."""
    from reasonbed.tune.records import ZERO_SHOT_ROW
    from reasonbed.tune.zero_shot import method_prompts

    both = {"test_acc_direct": 0.4, "test_acc_reasoning": 0.2}
    zero = [TrialRecord("zero_shot", ZERO_SHOT_ROW, "photo", 0, "zero_shot-photo-s0", {},
                        [_report(0, 0.3, 0.4, 0.9, **both)], "completed", cpus=2, lodo={})]
    records = [_record("a", [_report(4, 0.9, 0.8, 0.1)]),
               _record("b", [_report(4, 0.9, 0.6, 0.1, select_on="reasoning")], method="reasoning")]
    rows = results_table(records, ["photo"], "training_domain", zero_shot=zero)
    baselines = {row.select_on: row.cells["photo"].values for row in rows if row.zero_shot}
    assert baselines == {"direct": (0.4,), "reasoning": (0.2,)} and [r.method for r in rows[2:]] == ["direct",
                                                                                                       "reasoning"]
    assert "reasoning" in method_prompts("reasoning", {}) and method_prompts("direct", {}) == {"direct"}
    assert method_prompts("grpo", {"prompt": "reasoning"}) == {"direct", "reasoning"}  # the options' prompt
    assert method_prompts("grpo", {"prompt": "direct"}) == {"direct"}
