"""GRPO math as pure functions of tensors: advantages, the policy loss, chunked log-probs, dynamic-sampling
group filtering and micro-batch packing. Nothing here imports from rpt outside rpt.grpo; the loop that uses
them is rpt.train.train."""
from rpt.grpo.advantages import compute_advantages
from rpt.grpo.logprobs import token_logprobs
from rpt.grpo.loss import AGG_MODES, aggregation_weights, policy_loss
from rpt.grpo.packing import MicroBatch, bucket_micro_batches, pack_micro_batches
from rpt.grpo.sampling import PooledGroupCollector, filter_groups, select_kept

__all__ = [
    "AGG_MODES", "MicroBatch", "PooledGroupCollector", "aggregation_weights",
    "bucket_micro_batches", "compute_advantages", "filter_groups", "pack_micro_batches", "policy_loss",
    "select_kept", "token_logprobs",
]
