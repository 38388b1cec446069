"""Evaluation: the field's metrics (top-1, mAP, Epic-Kitchens verb / noun / action), evaluating a
finetuned checkpoint, frozen-feature probes, embeddings, and the figures (reconstructions, losses)."""

from avmae.evaluation.evaluate import (
    dataset_config,
    evaluate_checkpoint,
    evaluate_model,
    load_finetuned,
    predict,
)
from avmae.evaluation.figures import loss_curve, reconstruction_figure
from avmae.evaluation.metrics import (
    average_precision,
    classification_metrics,
    d_prime,
    mean_average_precision,
    mean_roc_auc,
    roc_auc,
    top_k_accuracy,
    verb_noun_action_accuracy,
)
from avmae.evaluation.probe import KnnMonitor, knn_scores, linear_scores

__all__ = [
    "dataset_config",
    "evaluate_checkpoint",
    "evaluate_model",
    "load_finetuned",
    "predict",
    "loss_curve",
    "reconstruction_figure",
    "average_precision",
    "classification_metrics",
    "d_prime",
    "mean_average_precision",
    "mean_roc_auc",
    "roc_auc",
    "top_k_accuracy",
    "verb_noun_action_accuracy",
    "KnnMonitor",
    "knn_scores",
    "linear_scores",
]
