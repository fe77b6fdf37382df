"""plan_for: input checks that need the data (before TensorFlow or any file)."""

from __future__ import annotations

import pytest

from fedmodel.central.config import TrainConfig
from fedmodel.central.plan import plan_for
from fedmodel.errors import ConfigError
from fedmodel.privacy.config import PrivacyConfig

# digits: 1,437 training examples; the default validation_fraction 0.1 holds out round(143.7) = 144.
TRAIN_EXAMPLES = 1437 - 144


@pytest.mark.parametrize("privacy", [None, PrivacyConfig(noise_multiplier=1.0)], ids=["sgd", "dp-sgd"])
def test_a_batch_larger_than_the_training_set_is_refused_with_or_without_dp(privacy: PrivacyConfig | None) -> None:
    fits = TrainConfig(model="logreg", dataset="digits", batch_size=TRAIN_EXAMPLES, privacy=privacy)
    assert len(plan_for(fits).dataset.x_train) == 1437
    too_big = TrainConfig(model="logreg", dataset="digits", batch_size=TRAIN_EXAMPLES + 1, privacy=privacy)
    with pytest.raises(ConfigError, match=rf"got batch_size={TRAIN_EXAMPLES + 1} > examples={TRAIN_EXAMPLES}$"):
        plan_for(too_big)


def test_the_bound_counts_the_examples_left_after_validation() -> None:
    config = TrainConfig(model="logreg", dataset="digits", batch_size=1437, validation_fraction=0.0)
    assert plan_for(config).privacy is None
    # round(718.5) = 718 held out for validation (round half to even), 719 left to train
    with pytest.raises(ConfigError, match=r"validation_fraction=0\.5 of 1437\); got batch_size=1000 > examples=719$"):
        plan_for(TrainConfig(model="logreg", dataset="digits", batch_size=1000, validation_fraction=0.5))
