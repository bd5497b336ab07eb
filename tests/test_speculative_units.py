"""Prompt-lookup drafting (runner/speculative.py) and the CORRAL_SPECULATIVE setting, without a model."""

from __future__ import annotations

import pytest

from corral.config import Settings
from corral.runner.speculative import DraftConfig, NgramDrafter, accepted


def test_draft_follows_the_latest_earlier_occurrence_of_the_longest_ngram() -> None:
    # "1 2 3" occurs at 0 (followed by 4 5) and "9 2 3" at 5 (followed by 7); the context ends in
    # "9 2 3", so the 3-gram match wins over the 2-gram "2 3" (whose latest follower is 7 too).
    d = NgramDrafter([1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 9, 2, 3])
    assert d.draft(4) == [7, 8, 9, 2]
    d2 = NgramDrafter([1, 2, 3, 4, 5, 6, 8, 2, 3])
    assert d2.draft(3) == [4, 5, 6]  # only the 2-gram "2 3" matches


def test_the_context_ending_never_matches_itself() -> None:
    assert NgramDrafter([5, 6, 7]).draft() == []
    d = NgramDrafter([5, 6])
    d.append(5)
    d.append(6)  # "5 6" occurred before, followed by 5
    assert d.draft() == [5, 6]


def test_draft_length_is_bounded_by_the_limit_and_the_config() -> None:
    d = NgramDrafter(list(range(20)) + [0, 1], DraftConfig(draft_max=5))
    assert d.draft() == [2, 3, 4, 5, 6]
    assert d.draft(2) == [2, 3]
    assert d.draft(0) == []
    assert d.draft(-3) == []


def test_ngrams_shorter_than_n_min_do_not_match() -> None:
    d = NgramDrafter([1, 2, 3, 1], DraftConfig(n_min=2))
    assert d.draft() == []  # "1" alone occurred before, but a 1-gram is below n_min
    assert NgramDrafter([1, 2, 3, 1], DraftConfig(n_min=1)).draft() == [2, 3, 1]
    with pytest.raises(ValueError):
        NgramDrafter([], DraftConfig(n_min=3, n_max=2))


def test_appending_keeps_the_index_up_to_date() -> None:
    d = NgramDrafter([10, 11, 12, 13, 14])
    for token in (10, 11):
        d.append(token)
    assert d.draft(3) == [12, 13, 14]
    d.extend([12, 99])  # diverged: "12 99" never occurred
    assert d.draft() == []


def test_accepted_counts_the_agreeing_prefix() -> None:
    assert accepted([4, 5, 6], [4, 5, 6, 7]) == 3
    assert accepted([4, 5, 6], [4, 9, 6, 7]) == 1
    assert accepted([4, 5, 6], [8, 5, 6, 7]) == 0
    assert accepted([], [3]) == 0


@pytest.mark.parametrize("value, on", [("ngram", True), ("NGRAM", True), ("1", True), ("off", False), ("0", False)])
def test_corral_speculative_setting(value: str, on: bool) -> None:
    assert Settings.from_env({"CORRAL_SPECULATIVE": value}).speculative is on
    assert Settings.from_env({}).speculative is False


def test_bad_speculative_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="ngram or off"):
        Settings.from_env({"CORRAL_SPECULATIVE": "medusa"})
    with pytest.raises(ValueError, match="1 to 64"):
        Settings.from_env({"CORRAL_DRAFT_MAX": "0"})
    assert Settings.from_env({"CORRAL_DRAFT_MAX": "16"}).draft_max == 16


def test_rejected_drafts_pause_drafting_longer_each_time() -> None:
    d = NgramDrafter([1, 2, 3, 4, 5, 1, 2])
    assert d.draft() == [3, 4, 5, 1, 2]
    pauses = []
    for _ in range(6):
        d.feedback(0)
        n = 0
        while not d.draft():
            n += 1
        pauses.append(n)
    assert pauses == [1, 2, 4, 8, 16, 16]
    d.feedback(2)  # an accepted draft ends the pause at once
    assert d.draft() == [3, 4, 5, 1, 2]


def test_modelfile_parameter_and_request_option() -> None:
    from corral.api.schemas import Options
    from corral.models.modelfile import ModelfileError, add_parameter

    params: dict = {}
    add_parameter(params, "speculative", "true")
    assert params == {"speculative": True}
    with pytest.raises(ModelfileError, match="speculative"):
        add_parameter(params, "speculative", "sometimes")
    assert Options.model_validate({"speculative": True}).generation().speculative is True
    assert Options.model_validate({}).generation().speculative is None  # the runner's default
