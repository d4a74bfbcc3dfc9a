"""The one check of the options every schedule here shares, for the schedulers, their factory and the trainer.

This file imports nothing: it travels, next to the scheduler that imports it, with a saved pipeline as remote code.
"""

from __future__ import annotations

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
# Posterior variance (fixed_small) or sigma_t^2 = beta_t (fixed_large, the seeds' Algorithm 18.2).
VARIANCE_TYPES = ("fixed_small", "fixed_large")


def check_schedule_options(
    num_train_timesteps: int, beta_start: float, beta_end: float, prediction_type: str = "epsilon",
    variance_type: str = "fixed_small", flags: dict[str, str] | None = None,
) -> None:
    """Refuse values no schedule here can use, with one line naming the problem and the fix.

    Messages name each option as `option=value`, or as `--flag value` where `flags` maps the option to the
    command-line flag that set it (a trainer's `{"num_train_timesteps": "--ddpm_num_steps", ...}`).
    """

    def named(option: str, value) -> str:
        if flags and option in flags:
            return f"{flags[option]} {value}"
        return f"{option}={value!r}" if isinstance(value, str) else f"{option}={value}"  # numbers as print shows them

    if num_train_timesteps < 2:
        raise ValueError(f"{named('num_train_timesteps', num_train_timesteps)} is too small: it must be at least 2 (1000 is standard).")
    for option, beta in (("beta_start", beta_start), ("beta_end", beta_end)):
        if not 0 < beta < 1:  # also refuses nan
            raise ValueError(f"{named(option, beta)} must lie in (0, 1): betas are variances of one step, e.g. 1e-4 and 0.02.")
    if beta_end <= beta_start:
        raise ValueError(
            f"{named('beta_end', beta_end)} must be larger than {named('beta_start', beta_start)}: the schedules rise from "
            "the start beta to the end beta; swap them."
        )
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"{named('prediction_type', prediction_type)} is unknown: use one of {', '.join(PREDICTION_TYPES)}.")
    if variance_type not in VARIANCE_TYPES:
        raise ValueError(f"{named('variance_type', variance_type)} is not supported: use one of {', '.join(VARIANCE_TYPES)}.")
