"""The fidelity report compares each measured row with the reference's figures."""

from bench.fidelity import REFERENCE, report
from kprune.pruning.knowledge import SCORE_SCALE


def _row(dev, test, scale=SCORE_SCALE, reduction=0.6):
    return {
        "task": "rt",
        "reduction": str(reduction),
        "seed": "0",
        "tokens": "100886",
        "tokens_asked": "100000",
        "dev": str(dev),
        "test": str(test),
        "heads_kept": "[2, 9]",
        "neurons_kept": "[442, 618]",
        "prune_seconds": "200.0",
        "peak_rss_mb": "2000",
        "code_digest": "abc",
        "score_scale": str(scale),
        "finished_at": "",
        "load_1m": "2.0",
    }


def test_report_says_where_kprune_stands_against_the_reference():
    ref = REFERENCE[0.6]
    above = report([_row(ref["dev"], ref["test"] + 0.01)])
    assert "at or above the reference on dev (+0.0000) and test (+0.0100)" in above
    assert f"{ref['prune_seconds'] / 200:.2f}x" in above
    below = report([_row(ref["dev"] - 0.02, ref["test"])])
    assert "**below**" in below


def test_two_runs_at_one_reduction_show_the_reference_once_and_judge_the_latest():
    ref = REFERENCE[0.6]
    early = {**_row(ref["dev"] - 0.02, ref["test"]), "finished_at": "2026-11-24T10:19:46Z"}
    late = {**_row(ref["dev"], ref["test"]), "code_digest": "def"}
    text = report([{**late, "finished_at": "2026-12-02T19:40:00Z"}, early])
    table = text[: text.index("At R")]
    assert table.count("| reference implementation |") == 1
    assert table.index("| kprune abc | 2026-11-24") < table.index("| kprune def | 2026-12-02")
    assert text.count("At R = 0.6") == 1 and "kprune (def) is at or above" in text


def test_rows_of_an_older_score_scale_are_left_out():
    text = report([_row(0.1, 0.1, scale=1), _row(0.9, 0.9)])
    assert "0.1000" not in text and "1 row(s) of an older score scale left out" in text


def test_options_of_one_session_are_compared_with_its_default_and_the_reference():
    ref = REFERENCE[0.6]["prune_seconds"]
    old = {**_row(0.84, 0.82), "session": "s1"}  # a lone default row of an earlier session
    rows = [old, {**_row(0.84, 0.83), "prune_seconds": "300.0", "session": "s2"}]
    fast = {**_row(0.85, 0.82), "method": "kprune-remeasure-layer", "prune_seconds": "150.0"}
    rows.append({**fast, "session": "s2"})
    text = report(rows)
    options = text[text.index("## Speed options") :]
    assert "invocation started s2" in options
    assert (
        f"| kprune-remeasure-layer | 0.6 | 0.8500 | 0.8200 | 150.0 | 1.95 | 2.00x | {ref / 150:.2f}x |"
        in options
    )
    assert (
        f"| kprune | 0.6 | 0.8400 | 0.8300 | 300.0 | 1.95 | 1.00x | {ref / 300:.2f}x |" in options
    )
    # the main table holds the default's rows only
    assert "kprune-remeasure-layer" not in text[: text.index("## Speed options")]
    assert "## Speed options" not in report([old])  # one method per session: nothing to compare


def test_fidelity_refuses_an_unknown_method_before_running(tmp_path, capsys):
    from bench.fidelity import main

    assert main(["--methods", "kprune,kprune-warp", "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert err.startswith("kprune: error:") and "kprune-warp" in err
    assert not (tmp_path / "fidelity.csv").exists()
