"""Reward: the prediction extracted from a response, scored by byte-level prefix matching (Eq. 3) or an
Appendix A variant (`compute_rewards`, what the RPT loop calls once per step), or the final answer verified
against a reference with math-verify (`answer_rewards`, RLVR)."""
from rpt.reward.answer import MathVerifier, answer_reward, answer_rewards
from rpt.reward.batch import compute_rewards
from rpt.reward.extract import extract_prediction
from rpt.reward.prefix_match import prefix_match_reward
from rpt.reward.tokens import first_token_id, token_bytes, token_text

__all__ = ["MathVerifier", "answer_reward", "answer_rewards", "compute_rewards", "extract_prediction",
           "first_token_id", "prefix_match_reward", "token_bytes", "token_text"]
