"""GRPO math as pure functions: advantages, the policy loss, chunked log-probs; plus dynamic-sampling and
micro-batch packing bookkeeping. The training loop is rpt.grpo.trainer.train."""
from rpt.grpo.advantages import compute_advantages
from rpt.grpo.logprobs import PolicyLogprobs, token_logprobs
from rpt.grpo.loss import AGG_MODES, aggregation_weights, policy_loss
from rpt.grpo.packing import MicroBatch, pack_micro_batches
from rpt.grpo.sampling import GroupCollector, filter_groups

__all__ = [
    "AGG_MODES", "GroupCollector", "MicroBatch", "PolicyLogprobs", "aggregation_weights", "compute_advantages",
    "filter_groups", "pack_micro_batches", "policy_loss", "token_logprobs",
]
