"""Measuring a learned representation, in one import: the kNN classifier, the linear probe, supervised heads.

The functions live in one module per concept; this module gathers them under the names user code and the
README use (`from byol_keras.evaluation import knn_accuracy`):

- `byol_keras.embedding`: `embed`, `embed_labelled` (an encoder's features, inference mode).
- `byol_keras.knn`: `knn_votes`, `knn_predict`, `knn_accuracy` (the weighted kNN monitor of solo-learn and
  lightly; cheap enough to run every epoch).
- `byol_keras.transfer`: `linear_probe` (on precomputed features), `classifier_on_encoder`,
  `train_classifier`, `evaluate_classifier`, `transfer` (the paper's linear evaluation and fine-tuning).
- `byol_keras.eval_data`: `classification_dataset` (the evaluation transforms), `default_crop_fraction`,
  `load_arrays`.
- `byol_keras.subsets`: `balanced_subset` (the semi-supervised protocol's label subsets).
"""

from byol_keras.embedding import embed, embed_labelled
from byol_keras.eval_data import classification_dataset, default_crop_fraction, load_arrays
from byol_keras.knn import knn_accuracy, knn_predict, knn_votes
from byol_keras.subsets import balanced_subset
from byol_keras.transfer import (
    classifier_on_encoder,
    evaluate_classifier,
    linear_probe,
    train_classifier,
    transfer,
)

__all__ = [
    "balanced_subset",
    "classification_dataset",
    "classifier_on_encoder",
    "default_crop_fraction",
    "embed",
    "embed_labelled",
    "evaluate_classifier",
    "knn_accuracy",
    "knn_predict",
    "knn_votes",
    "linear_probe",
    "load_arrays",
    "train_classifier",
    "transfer",
]
