"""Language metrics: identical = 1, disjoint = 0, BLEU subsets agree with sacrebleu."""

from __future__ import annotations

import numpy as np
import pytest
from sacrebleu.metrics import BLEU

from pointvl.eval.language import bertscore_f1, corpus_bleu, language_metrics, rouge_f

REFS = [
    "a wooden chair with four legs and a curved back",
    "a tall lamp with a round white shade on a thin pole",
    "a red mug with a large handle on one side",
]
HYPS = [
    "a wooden chair with three legs and a straight back",
    "a lamp with a white shade on a long pole",
    "a blue cup with a small handle",
]


def test_identical_strings_score_one():
    summary, per = language_metrics(REFS, REFS, n_boot=50)
    for k in ("bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rougeL"):
        assert summary[k].mean == pytest.approx(1.0), k
    np.testing.assert_allclose(per["rougeL"], 1.0)


def test_disjoint_and_empty_score_zero():
    summary, _ = language_metrics(["zebra xylophone quartz"] * 3, REFS, n_boot=50)
    for k in ("bleu1", "bleu4", "rouge1", "rougeL"):
        assert summary[k].mean == 0.0, k
    assert rouge_f([""], [REFS[0]])["rouge1"][0] == 0.0


def test_cumulative_bleu_orders_agree_with_sacrebleu():
    summary, _ = language_metrics(HYPS, REFS, n_boot=50)
    for n in (1, 2, 3, 4):
        ref = BLEU(max_ngram_order=n, lowercase=True).corpus_score(HYPS, [REFS]).score / 100
        assert summary[f"bleu{n}"].mean == pytest.approx(ref), n
        assert corpus_bleu(HYPS, REFS, n) == pytest.approx(ref)
    b = [summary[f"bleu{n}"].mean for n in (1, 2, 3, 4)]
    assert b == sorted(b, reverse=True) and 0 < b[3] < b[0] < 1


def test_bertscore_local_minilm_three_pairs():
    f1 = bertscore_f1([REFS[0], HYPS[1], ""], [REFS[0], REFS[1], REFS[2]])
    assert f1.shape == (3,)
    assert f1[0] == pytest.approx(1.0, abs=1e-4)
    assert 0.3 < f1[1] < f1[0]
    assert f1[2] == 0.0  # an unparsable (empty) description scores 0
