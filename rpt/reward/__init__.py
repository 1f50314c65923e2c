"""Reward: the prediction extracted from a response, scored by byte-level prefix matching (Eq. 3) or an
Appendix A variant. `compute_rewards` is what the loop calls once per step."""
from rpt.reward.batch import compute_rewards
from rpt.reward.extract import extract_prediction
from rpt.reward.prefix_match import prefix_match_reward
from rpt.reward.tokens import first_token_id, token_bytes, token_text

__all__ = ["compute_rewards", "extract_prediction", "first_token_id", "prefix_match_reward", "token_bytes",
           "token_text"]
