"""The privacy plan of a central DP-SGD run: sampling rate, steps, noise and the budget cap.

TensorFlow-free, so a run is checked (and its noise calibrated) before anything starts.
"""

from __future__ import annotations

import dataclasses

from fedmodel.errors import ConfigError
from fedmodel.privacy.calibration import calibrate_noise_multiplier, warn_delta
from fedmodel.privacy.config import PrivacyConfig
from fedmodel.privacy.ledger import steps_within_budget
from fedmodel.privacy.sampling_math import dp_steps


@dataclasses.dataclass(frozen=True)
class PrivatePlan:
    """What a DP-SGD run will do, decided before it starts."""

    privacy: PrivacyConfig
    examples: int
    batch_size: int
    sampling_rate: float
    planned_steps: int
    noise_multiplier: float
    calibrated: bool
    max_steps: int
    warnings: tuple[str, ...]

    @property
    def budget_limited(self) -> bool:
        """True when the target epsilon allows fewer steps than planned."""
        return self.max_steps < self.planned_steps


def plan_privacy(privacy: PrivacyConfig, *, examples: int, batch_size: int, epochs: int) -> PrivatePlan:
    """Sampling rate ``q = batch_size / examples``, steps ``ceil(epochs * examples / batch_size)``, noise."""
    if batch_size > examples:
        raise ConfigError(
            f"batch_size must be <= training examples for DP-SGD (q = batch_size / examples <= 1); "
            f"got batch_size={batch_size} > examples={examples}"
        )
    q = batch_size / examples
    steps = dp_steps(examples=examples, batch_size=batch_size, epochs=epochs)
    calibrated = privacy.noise_multiplier is None
    if privacy.noise_multiplier is None:
        assert privacy.target_epsilon is not None  # PrivacyConfig guarantees one of the two
        z = calibrate_noise_multiplier(
            target_epsilon=privacy.target_epsilon,
            delta=privacy.delta,
            sampling_rate=q,
            steps=steps,
            accountant=privacy.accountant,
        )
    else:
        z = float(privacy.noise_multiplier)
    max_steps = steps
    if privacy.target_epsilon is not None and not calibrated:
        max_steps = min(
            steps,
            steps_within_budget(
                noise_multiplier=z,
                sampling_rate=q,
                delta=privacy.delta,
                target_epsilon=privacy.target_epsilon,
                accountant=privacy.accountant,
            ),
        )
        if max_steps == 0:
            raise ConfigError(
                f"target epsilon {privacy.target_epsilon} at delta {privacy.delta} does not allow even one "
                f"step with noise multiplier {z} and q={q:.4g}; raise the noise or the target"
            )
    warning = warn_delta(privacy.delta, examples)
    return PrivatePlan(
        privacy=privacy,
        examples=examples,
        batch_size=batch_size,
        sampling_rate=q,
        planned_steps=steps,
        noise_multiplier=z,
        calibrated=calibrated,
        max_steps=max_steps,
        warnings=(warning,) if warning else (),
    )
