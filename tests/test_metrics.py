"""The field's metrics on small cases computed by hand (paper Sec. 4.1)."""

import math

import numpy as np
import pytest
import torch

from avmae.evaluation import (
    average_precision,
    classification_metrics,
    d_prime,
    mean_average_precision,
    mean_roc_auc,
    roc_auc,
    top_k_accuracy,
    verb_noun_action_accuracy,
)


def test_top_k_accuracy():
    scores = np.array([[0.1, 0.5, 0.2, 0.0, 0.05, 0.15],    # ranking 1, 2, 5, 0, 4, 3
                       [0.3, 0.1, 0.2, 0.9, 0.0, 0.4],      # ranking 3, 5, 0, 2, 1, 4
                       [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])     # ranking 5, 4, 3, 2, 1, 0
    labels = np.array([1, 2, 0])
    # top-1: only example 0 is right. top-5: example 0 yes, 1 yes (2 is 4th), 2 no (0 is 6th).
    assert top_k_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(scores, labels, 5) == pytest.approx(2 / 3)
    assert top_k_accuracy(scores, labels, 10) == 1.0       # k above C means all classes


def test_top_k_ties_go_to_the_lower_class_index():
    scores = np.array([[1.0, 1.0, 0.0]])
    assert top_k_accuracy(scores, np.array([0]), 1) == 1.0
    assert top_k_accuracy(scores, np.array([1]), 1) == 0.0
    assert top_k_accuracy(scores, np.array([1]), 2) == 1.0


def test_average_precision_by_hand():
    # Ranked: +, -, +, -, +. Precision at each positive: 1/1, 2/3, 3/5 -> AP = (1 + 2/3 + 3/5) / 3 = 34/45.
    ap = average_precision([0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 0, 1])
    assert ap == pytest.approx(34 / 45)
    # Any order of the examples gives the same AP.
    assert average_precision([0.5, 0.7, 0.9, 0.6, 0.8], [1, 1, 1, 0, 0]) == pytest.approx(34 / 45)
    assert average_precision([0.1, 0.2], [0, 0]) != average_precision([0.1, 0.2], [0, 0])  # NaN


def test_average_precision_with_tied_scores_is_one_threshold():
    # Scores 0.9(-), 0.5(+), 0.5(-), 0.1(+). Thresholds: 0.9 -> P=0/1, R=0; 0.5 (both tied examples
    # at once) -> P=1/3, R=1/2; 0.1 -> P=2/4, R=1. AP = 1/2 * 1/3 + 1/2 * 1/2 = 5/12, whichever of
    # the tied pair comes first (ranking the positive first would give 1/2 * 1/2 + 1/2 * 1/2 = 1/2).
    assert average_precision([0.9, 0.5, 0.5, 0.1], [0, 1, 0, 1]) == pytest.approx(5 / 12)
    assert average_precision([0.9, 0.5, 0.5, 0.1], [0, 0, 1, 1]) == pytest.approx(5 / 12)


def test_map_is_the_mean_over_classes_present():
    scores = np.array([[0.9, 0.2, 0.5],
                       [0.8, 0.6, 0.4],
                       [0.1, 0.7, 0.3]])
    targets = np.array([[1, 0, 0],
                        [0, 0, 0],
                        [1, 1, 0]])
    # class 0: ranked +, -, + -> (1 + 2/3) / 2 = 5/6; class 1: ranked + (0.7), -, - -> 1;
    # class 2 has no positive and is left out: mAP = (5/6 + 1) / 2 = 11/12.
    assert mean_average_precision(scores, targets) == pytest.approx(11 / 12)
    with pytest.raises(ValueError):
        mean_average_precision(scores, np.zeros_like(targets))


def test_roc_auc_by_hand():
    # Positives 0.35, 0.8; negatives 0.1, 0.4. Pairs won: 0.35>0.1, 0.8>0.1, 0.8>0.4 -> 3/4.
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # A tie counts one half: positive 0.5 vs negatives 0.5 and 0.2 -> (1/2 + 1) / 2 = 3/4.
    assert roc_auc([0.5, 0.5, 0.2], [1, 0, 0]) == pytest.approx(0.75)
    assert roc_auc([0.2, 0.5, 0.5], [0, 0, 1]) == pytest.approx(0.75)
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))


def test_mean_roc_auc_skips_classes_without_both_kinds():
    scores = np.array([[0.1, 0.9, 0.3], [0.4, 0.2, 0.1], [0.35, 0.5, 0.2], [0.8, 0.4, 0.9]])
    targets = np.array([[0, 1, 1], [0, 1, 0], [1, 1, 0], [1, 1, 0]])
    # class 0: 3/4 (above); class 1: all positive, skipped; class 2: positive 0.3 vs 0.1, 0.2, 0.9 -> 2/3.
    assert mean_roc_auc(scores, targets) == pytest.approx((0.75 + 2 / 3) / 2)


def test_d_prime():
    assert d_prime(0.5) == pytest.approx(0.0)
    # Phi(1/sqrt 2) = 0.76025 -> d' = sqrt(2) * (1/sqrt 2) = 1
    assert d_prime(0.760249938) == pytest.approx(1.0, abs=1e-6)
    assert d_prime(0.25) == pytest.approx(-d_prime(0.75))
    assert d_prime(1.0) == math.inf and d_prime(0.0) == -math.inf


def test_verb_noun_action_accuracy():
    verb = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])   # argmax 0, 1, 0, 1
    noun = np.array([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])  # 1, 0, 2, 2
    verb_labels, noun_labels = np.array([0, 1, 1, 1]), np.array([1, 2, 2, 2])
    # verb right: 0, 1, 3 -> 3/4; noun right: 0, 2, 3 -> 3/4; both right: 0, 3 -> 1/2.
    out = verb_noun_action_accuracy(verb, noun, verb_labels, noun_labels)
    assert out == {"verb_top1": 0.75, "noun_top1": 0.75, "action_top1": 0.5}


def test_classification_metrics_accepts_tensors():
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    single = classification_metrics(scores, torch.tensor([0, 1, 0]), "single")
    assert single == {"top1": pytest.approx(2 / 3), "top5": 1.0}
    multi = classification_metrics(scores, torch.tensor([[1, 0], [0, 1], [1, 0]]), "multi")
    # class 0: positives 0.9, 0.4 vs negative 0.2 -> AP 1, AUC 1; class 1: positive 0.8 vs 0.1, 0.6 -> 1.
    assert multi["mAP"] == 1.0 and multi["AUC"] == 1.0 and multi["d_prime"] == math.inf
    vn = classification_metrics((scores, scores), (torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0])),
                                "verb_noun")
    # argmax 0, 1, 1: verbs all right, nouns right for the first two -> action 2/3
    assert vn["verb_top1"] == 1.0 and vn["action_top1"] == pytest.approx(2 / 3) and vn["verb_top5"] == 1.0


def test_ap_and_auc_agree_with_their_definitions_on_random_tied_data():
    """AP = mean over positives of the precision among all examples scoring at least as high;
    AUC = mean over (positive, negative) pairs of [s+ > s-] + 1/2 [s+ == s-]."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = rng.integers(0, 5, size=30) / 4.0           # many ties
        t = rng.random(30) < 0.3
        t[0], t[1] = True, False
        ap = np.mean([(t & (s >= s[i])).sum() / (s >= s[i]).sum() for i in np.flatnonzero(t)])
        pos, neg = s[t], s[~t]
        auc = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
        assert average_precision(s, t) == pytest.approx(ap)
        assert roc_auc(s, t) == pytest.approx(auc)
