"""The learning check (slow: `make test-slow`, ~3 minutes): stories260K trained by the whole loop on its own
stories gets better at next-token prediction. Numbers over 3 seeds: benchmarks/learning_check.py."""
import statistics

import pytest

from benchmarks.learning_check import expected_reward, prepare_story_data, run_seed


@pytest.mark.slow
def test_reward_rises_over_60_steps(stories_dir, tmp_path):
    data_dir = prepare_story_data(stories_dir, tmp_path, stories=4)
    before = expected_reward(stories_dir, data_dir)
    rewards = run_seed(data_dir, tmp_path / "run", seed=0, steps=60, nproc=1, lr=3e-4)
    after = expected_reward(tmp_path / "run" / "hf", data_dir)
    assert statistics.mean(rewards[-10:]) > statistics.mean(rewards[:10]) + 0.05  # measured +0.14
    assert after > before + 0.05  # measured 0.583 -> 0.702
