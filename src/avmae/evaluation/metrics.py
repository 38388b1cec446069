"""The field's classification metrics, in numpy (paper Sec. 4.1).

    VGGSound       top-1 and top-5 accuracy                       single label
    AudioSet       mAP, ROC AUC and d-prime                       multi-label (multi-hot targets)
    Epic Kitchens  verb, noun and action accuracy (action: both right)

Conventions, chosen so that results never depend on the order of the examples:
- Ties in top-k: the lower class index wins (a stable sort), as `argmax` does.
- Ties in AP: tied scores form one threshold (precision is evaluated after the whole tied group),
  as scikit-learn's `average_precision_score`.
- Ties in AUC: a tied positive/negative pair counts one half (Mann-Whitney U), which equals the
  trapezoidal area under the ROC curve.
- mAP averages over classes PRESENT in the targets (>= 1 positive); AUC over classes with both
  positives and negatives: AP and AUC are undefined for the others.
Inputs may be numpy arrays or CPU torch tensors: scores/logits (N, C), labels (N,) or targets (N, C).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def top_k_accuracy(scores, labels, k: int = 1) -> float:
    """Fraction of examples whose label is among the k highest scores. scores (N, C), labels (N,)."""
    scores, labels = _np(scores), _np(labels).astype(np.int64)
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (N, k); ties: lower index first
    return float((top == labels[:, None]).any(axis=1).mean())


def average_precision(scores, targets) -> float:
    """AP of one class: sum over thresholds of (R_n - R_{n-1}) * P_n. scores, targets (N,).

    NaN when the class has no positive.
    """
    scores, targets = _np(scores).astype(np.float64), _np(targets) > 0.5
    positives = targets.sum()
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], targets[order]
    tp = np.cumsum(t)                                       # true positives among the first i + 1
    last = np.r_[s[1:] != s[:-1], True]                     # the last index of each tied group
    tp, ranks = tp[last], (np.arange(len(s)) + 1)[last]
    precision, recall = tp / ranks, tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(scores, targets) -> float:
    """mAP: mean AP over classes with at least one positive. scores, targets (N, C)."""
    scores, targets = _np(scores), _np(targets)
    present = (targets > 0.5).any(axis=0)
    if not present.any():
        raise ValueError("mAP is undefined: no class has a positive example")
    return float(np.mean([average_precision(scores[:, c], targets[:, c])
                          for c in np.flatnonzero(present)]))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x, tied values sharing their mean rank."""
    order = np.argsort(x, kind="stable")
    s = x[order]
    starts = np.r_[True, s[1:] != s[:-1]]                 # first index of each tied group
    group = np.cumsum(starts) - 1                         # group id of each sorted position
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], len(s)] - 1
    mean_rank = (first + last) / 2.0 + 1.0                # mean of ranks first+1 .. last+1
    ranks = np.empty(len(x))
    ranks[order] = mean_rank[group]
    return ranks


def roc_auc(scores, targets) -> float:
    """Area under the ROC curve of one class: P(score of a positive > score of a negative), ties
    1/2. NaN without both positives and negatives. scores, targets (N,)."""
    scores, targets = _np(scores).astype(np.float64), _np(targets) > 0.5
    n_pos, n_neg = int(targets.sum()), int((~targets).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    return float((ranks[targets].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def mean_roc_auc(scores, targets) -> float:
    """Mean AUC over classes with both positives and negatives. scores, targets (N, C)."""
    scores, targets = _np(scores), _np(targets) > 0.5
    valid = targets.any(axis=0) & (~targets).any(axis=0)
    if not valid.any():
        raise ValueError("AUC is undefined: no class has both positive and negative examples")
    return float(np.mean([roc_auc(scores[:, c], targets[:, c]) for c in np.flatnonzero(valid)]))


def d_prime(auc: float) -> float:
    """d' = sqrt(2) * Phi^-1(AUC), the separation of two unit normals with this AUC (AudioSet)."""
    if auc >= 1.0:
        return math.inf
    if auc <= 0.0:
        return -math.inf
    return math.sqrt(2.0) * NormalDist().inv_cdf(auc)


def verb_noun_action_accuracy(verb_scores, noun_scores, verb_labels, noun_labels) -> dict[str, float]:
    """Epic Kitchens top-1 accuracies; an action is right when both verb and noun are (Sec. 4.1)."""
    verb_ok = np.argmax(_np(verb_scores), axis=1) == _np(verb_labels).astype(np.int64)
    noun_ok = np.argmax(_np(noun_scores), axis=1) == _np(noun_labels).astype(np.int64)
    return {"verb_top1": float(verb_ok.mean()), "noun_top1": float(noun_ok.mean()),
            "action_top1": float((verb_ok & noun_ok).mean())}


def classification_metrics(scores, targets, task: str) -> dict[str, float]:
    """All metrics of one task as a flat dict (what `avmae evaluate` prints).

    task "single": scores (N, C), targets labels (N,)          -> top1, top5
    task "multi":  scores (N, C), targets multi-hot (N, C)     -> mAP, AUC, d_prime
    task "verb_noun": scores (verb (N, Cv), noun (N, Cn)), targets (verb (N,), noun (N,))
                   -> verb_top1, noun_top1, action_top1, verb_top5, noun_top5
    """
    if task == "single":
        return {"top1": top_k_accuracy(scores, targets, 1), "top5": top_k_accuracy(scores, targets, 5)}
    if task == "multi":
        auc = mean_roc_auc(scores, targets)
        return {"mAP": mean_average_precision(scores, targets), "AUC": auc, "d_prime": d_prime(auc)}
    if task == "verb_noun":
        (vs, ns), (vl, nl) = scores, targets
        out = verb_noun_action_accuracy(vs, ns, vl, nl)
        out.update(verb_top5=top_k_accuracy(vs, vl, 5), noun_top5=top_k_accuracy(ns, nl, 5))
        return out
    raise ValueError(f"unknown task '{task}': single, multi or verb_noun")
