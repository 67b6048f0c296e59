"""The fidelity report compares each measured row with the reference's figures."""

from bench.fidelity import REFERENCE, report
from kprune.knowledge import SCORE_SCALE


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


def test_rows_of_an_older_score_scale_are_left_out():
    text = report([_row(0.1, 0.1, scale=1), _row(0.9, 0.9)])
    assert "0.1000" not in text and "1 row(s) of an older score scale left out" in text
