"""The "no negative published count" check of the private segments (issue 14) can fail.

The DP k-means publishes the non-negative projection of its noisy counts, so a check that reads
the published counts only for ``< 0`` is true by construction. ``published_count_problems``
checks the published counts against the raw noisy counts the model records: a release that
published them raw, edited them after the projection, or projected other counts is caught.
"""

from __future__ import annotations

import numpy as np
import pytest

from segments.privacy.kmeans_estimator import PrivateKMeans, nonnegative_counts
from segments.privacy.postprocess import published_count_problems


@pytest.fixture(scope="module")
def thin_fit() -> PrivateKMeans:
    """A DP k-means at an ε so small that some noisy counts come out negative."""
    rng = np.random.default_rng(14)
    X = rng.uniform(0.0, 1.0, size=(60, 2))
    for _ in range(20):  # OpenDP's noise is not seeded: fit until a count is negative
        km = PrivateKMeans(6, bounds=[(0.0, 1.0)] * 2, epsilon=0.05, iterations=2).fit(X)
        # a negative noisy count, and people to move between segments once projected
        if (km.noisy_counts_ < 0).any() and km.published_counts_.sum() >= 2:
            return km
    pytest.fail("20 fits at ε 0.05 on 60 people gave no negative noisy count")


def test_the_projection_of_the_noisy_counts_passes(thin_fit):
    published = thin_fit.published_counts_
    assert published.min() >= 0
    assert published_count_problems(published, thin_fit.noisy_counts_) == []


def test_attack_raw_noisy_counts_published_fail_the_check(thin_fit):
    raw = np.round(thin_fit.noisy_counts_)
    problems = published_count_problems(raw, thin_fit.noisy_counts_)
    assert any("negative" in p for p in problems), problems
    assert any("differ from the projection" in p for p in problems), problems


def test_attack_counts_edited_after_the_projection_fail_the_check(thin_fit):
    published = thin_fit.published_counts_.copy()
    big, small = int(np.argmax(published)), int(np.argmin(published))
    published[big] -= 1  # one person moved between segments: total kept, nothing negative
    published[small] += 1
    problems = published_count_problems(published, thin_fit.noisy_counts_)
    assert len(problems) == 1 and "differ from the projection" in problems[0], problems


def test_counts_projected_from_other_noise_or_not_whole_fail_the_check():
    noisy = np.array([120.4, -21.0, 35.2, -3.0])
    other = nonnegative_counts(noisy + np.array([5.0, 0.0, -5.0, 0.0]))
    assert any("differ" in p for p in published_count_problems(other, noisy))
    halves = published_count_problems([108.5, 0, 23.5, 0], noisy)
    assert any("not a whole number" in p for p in halves), halves
    assert published_count_problems([109, 0, 23], noisy) == ["3 published counts for 4 noisy ones"]
    total = published_count_problems([110, 0, 23, 0], noisy)
    assert any("add up to 133" in p for p in total), total
