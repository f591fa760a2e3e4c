"""A rerun's ``from_iteration`` must name one of the job's rounds: outside them nothing is forced,
and a rerun that redoes nothing must not report success."""

import pytest

from irsflow.errors import InputError
from irsflow.jobs.resume import check_from_iteration, forced


def test_from_iteration_outside_the_rounds_is_refused_naming_them():
    assert not any(forced(1, p, "SCORING", 5) for p in ("GENERATING", "SCORING", "TRAINING", "EVALUATING"))
    for bad in (5, 2, 0, -1):
        with pytest.raises(
            InputError,
            match=rf"--from-iteration: job J has rounds 1\.\.1; --from-iteration {bad} "
            "is outside them",
        ):
            check_from_iteration("J", 1, bad, "--from-iteration")
    with pytest.raises(InputError, match=r"^from_iteration: job J has rounds 1\.\.3; from_iteration 4 is"):
        check_from_iteration("J", 3, 4)


def test_from_iteration_inside_the_rounds_passes():
    assert [check_from_iteration("J", 3, n) for n in (1, 2, 3)] == [1, 2, 3]
