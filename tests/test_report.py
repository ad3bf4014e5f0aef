"""The confusion matrix and classification table, counted by NumPy, against scikit-learn's."""

import numpy as np
import pytest
from sklearn.metrics import classification_report
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from fastes.io.report import classification_table, confusion_matrix


@pytest.mark.parametrize("seed", range(4))
def test_match_scikit_learn_on_random_predictions(seed):
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 12))
    truth = rng.integers(0, n_classes, 500)
    predictions = np.where(rng.random(500) < 0.7, truth, rng.integers(0, n_classes, 500))
    predictions[predictions == 1] = 0  # a class never predicted: zero_division=0
    truth[truth == n_classes - 1] = 0  # a class that never occurs
    labels = list(range(n_classes))
    np.testing.assert_array_equal(confusion_matrix(truth, predictions, n_classes),
                                  sk_confusion_matrix(truth, predictions, labels=labels))
    assert classification_table(truth, predictions, labels) == classification_report(
        truth, predictions, labels=labels, digits=4, zero_division=0)


def test_fastes_train_does_not_import_scikit_learn(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from fastes.cli.main import main; "
            f"main(['train', '--preset', 'seed', '--epochs', '1', '--quiet', '--out', {str(tmp_path / 'r')!r}]); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
