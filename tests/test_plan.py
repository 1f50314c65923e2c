"""The memory plan against numbers computed by hand for Qwen2.5-14B's shape (R1-Distill-Qwen-14B, the
paper's policy) under launch/configs/rpt_14b.yaml's settings at 0.5 utilization, 8 GPUs x 80 GiB."""
import json
import subprocess
import sys

import pytest

from rpt.config import load_config
from rpt.plan import GIB, ModelShape, plan_memory, read_model_shape, summary_line
from tests.conftest import REPO

QWEN25_14B = {"model_type": "qwen2", "hidden_size": 5120, "num_hidden_layers": 48, "num_attention_heads": 40,
              "num_key_value_heads": 8, "intermediate_size": 13824, "vocab_size": 152064,
              "tie_word_embeddings": False}
# by hand: q 5120*5120+5120, k and v 5120*1024+1024 each, o 5120*5120, MLP 3*5120*13824, 2 norms of 5120
LAYER = 26_219_520 + 2 * 5_243_904 + 26_214_400 + 212_336_640 + 10_240  # = 275,268,608
EMBED = 152064 * 5120  # = 778,567,680, twice (untied lm_head)
PARAMS = 48 * LAYER + 2 * EMBED + 5120  # = 14,770,033,664: Qwen2.5-14B's 14.77B parameters


@pytest.fixture
def qwen14b_dir(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(QWEN25_14B))
    return tmp_path


def paper_config(model_dir, *overrides):
    return load_config(str(REPO / "launch/configs/rpt_14b.yaml"),
                       [f"--model.path={model_dir}", "--data.path=d", "--rollout.gpu_memory_utilization=0.5",
                        *overrides])


def test_parameter_count_and_kv_bytes_of_qwen25_14b(qwen14b_dir):
    shape = read_model_shape(qwen14b_dir)
    assert (shape.head_dim, shape.num_kv_heads, shape.attention_bias) == (128, 8, True)
    assert shape.layer_params == LAYER == 275_268_608
    assert shape.params == PARAMS == 14_770_033_664
    assert shape.kv_bytes_per_token(2, 1) == 2 * 48 * 8 * 128 * 2 == 196_608  # K,V x layers x kv heads x dim x bf16
    assert shape.kv_bytes_per_token(2, 2) == 98_304  # TP 2 splits the 8 KV heads
    assert shape.kv_bytes_per_token(2, 16) == 2 * 48 * 1 * 128 * 2  # more ranks than heads: replicated


def test_per_gpu_rows_equal_hand_computed_bytes(qwen14b_dir):
    plan = plan_memory(read_model_shape(qwen14b_dir), paper_config(qwen14b_dir), world_size=8, gpu_memory_gib=80)
    rows = {name.split(" (")[0]: phases for name, *phases in plan.rows}
    shard = PARAMS * 4 // 8  # 7,385,016,832
    assert rows["fp32 parameter shards"] == [shard, shard, shard]
    assert rows["gradient shards"] == [0, shard, 0]
    assert rows["AdamW m + v shards"] == [0, 2 * shard, 2 * shard]  # offloaded while generating
    assert rows["root params gathered"] == [0, (2 * EMBED + 5120) * 2 * 2, 0]  # bf16 params + grads
    assert rows["FSDP gather/reduce buffers"] == [0, 2 * LAYER * (2 + 2 + 4), 0]
    assert rows["saved activations at 16384 tokens"] == [0, 48 * 16384 * 5120 * 2, 0]  # 7.5 GiB
    assert rows["one layer recomputed + backward"] == [0, 2 * 16384 * (4 * 5120 + 2 * 1024 + 3 * 13824) * 2, 0]
    assert rows["logits chunk 1024 x 152064 fp32 + grad"] == [0, 2 * 1024 * 152064 * 4, 0]
    assert rows["vLLM weights"] == [PARAMS * 2, 0, PARAMS * 2]  # 27.5 GiB, asleep during the update
    workspace = 16384 * 3 * 13824 * 2 + 2 * 1024 * 152064 * 4 + GIB
    kv = 40 * GIB - PARAMS * 2 - workspace  # 0.5 x 80 GiB, less weights and workspace: 9,731,201,024
    assert rows["vLLM KV cache"] == [kv, 0, 0]
    assert rows["weight stream: largest tensor + one layer"] == [0, 0, EMBED * 4 + LAYER * 4]
    assert plan.total(0) == shard + 40 * GIB + 2 * GIB  # trainer shards + vLLM's whole budget + context
    assert plan.kv_cache_tokens == kv // 196_608 == 49_495
    assert plan.round_tokens == 256 // 8 * 8 * (4096 + 8192) == 3_145_728
    assert plan.max_utilization == 0.80  # floor((80 - 6.88 - 2 - 4 headroom) / 80, 0.05)
    assert dict(plan.host_rows) == {"vLLM pinned weight backups (sleep level 1)": 8 * PARAMS * 2,
                                    "offloaded AdamW state": 8 * 2 * shard,
                                    "rank 0 loading the checkpoint (model.dtype, once)": PARAMS * 4}
    # at 0.5 the cache holds 4 sequences of 12,288 tokens: the warning names the field and what fits
    assert len(plan.warnings) == 1
    assert "4.0 sequences" in plan.warnings[0] and "rollout.gpu_memory_utilization (at most 0.80" in plan.warnings[0]


def test_fields_to_change_are_named_when_a_phase_does_not_fit(qwen14b_dir):
    shape = read_model_shape(qwen14b_dir)
    too_greedy = plan_memory(shape, paper_config(qwen14b_dir, "--rollout.gpu_memory_utilization=0.95"), 8, 80)
    assert any(w.startswith("the generation phase needs") and "lower rollout.gpu_memory_utilization" in w
               for w in too_greedy.warnings)
    long_micro = plan_memory(shape, paper_config(qwen14b_dir, "--train.micro_batch_tokens=131072"), 8, 80)
    assert any(w.startswith("the update phase needs") and "train.micro_batch_tokens" in w for w in long_micro.warnings)
    awake = plan_memory(shape, paper_config(qwen14b_dir, "--rollout.sleep_level=0"), 8, 80)
    assert any("set rollout.sleep_level=1" in w for w in awake.warnings)  # vLLM stays resident in the update
    one_gpu = plan_memory(shape, paper_config(qwen14b_dir), 1, 80)  # 14B on one GPU: nothing fits
    assert any(w.startswith("the sync phase needs") and "rollout.tensor_parallel_size" in w for w in one_gpu.warnings)
    tp4 = plan_memory(shape, paper_config(qwen14b_dir, "--rollout.gpu_memory_utilization=0.8",
                                          "--rollout.tensor_parallel_size=4"), 8, 80)
    assert tp4.warnings == [] and tp4.sequences_at_max_length >= 64


def test_model_shape_errors_name_the_file_and_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        read_model_shape(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**QWEN25_14B, "hidden_size": None}))
    with pytest.raises(ValueError, match=r"config.json: missing or non-integer field\(s\) \['hidden_size'\]"):
        read_model_shape(tmp_path)


def test_tied_llama_style_shape():
    tied = ModelShape(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32, intermediate_size=128,
                      vocab_size=1000, tie_word_embeddings=True, attention_bias=False)
    # q 64*64, k and v 64*32 each, o 64*64, MLP 3*64*128, 2 norms; one embedding shared with the lm_head
    assert tied.layer_params == 4096 + 2 * 2048 + 4096 + 24576 + 128
    assert tied.params == 2 * tied.layer_params + 64000 + 64


def test_plan_cli_prints_the_table_and_summary(qwen14b_dir):
    result = subprocess.run([sys.executable, "launch/plan.py", "--config", "launch/configs/rpt_14b.yaml",
                             f"--model.path={qwen14b_dir}", "--world_size", "8", "--gpu_memory_gib", "80"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "14.77B params" in result.stdout and "per GPU (GiB)" in result.stdout
    plan = plan_memory(read_model_shape(qwen14b_dir), paper_config(qwen14b_dir, "--rollout.gpu_memory_utilization=0.8"),
                       8, 80)
    total_line = next(line for line in result.stdout.splitlines() if line.startswith("total"))
    assert total_line.split()[1:4] == [f"{plan.total(p) / GIB:.2f}" for p in range(3)]  # the yaml's 0.8
    assert summary_line(plan).startswith("memory plan per GPU (GiB of 80): generation ")


def test_rpt_14b_yaml_follows_the_plan(qwen14b_dir):
    """The preset's engine memory is the largest utilization the plan fits on 8 x 80 GiB, and its header
    comment carries the plan's table for exactly that setting."""
    cfg = load_config(str(REPO / "launch/configs/rpt_14b.yaml"), [f"--model.path={qwen14b_dir}", "--data.path=d"])
    plan = plan_memory(read_model_shape(qwen14b_dir), cfg, world_size=8, gpu_memory_gib=80)
    assert cfg.rollout.gpu_memory_utilization == plan.max_utilization == 0.8
    header = (REPO / "launch/configs/rpt_14b.yaml").read_text()
    total_line = next(line for line in header.splitlines() if line.startswith("#   total "))
    assert total_line.split()[2:5] == [f"{plan.total(p) / GIB:.2f}" for p in range(3)]
