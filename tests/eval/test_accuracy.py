"""Next-token accuracy (Table 1, Table 8): pure parts against hand-labelled and brute-force references, then
both modes end to end on stories260K with the real HF engine and the real data pipeline."""
import importlib.util
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rpt.data.sample import Sample
from rpt.eval.accuracy import (compute_pass_at_k, evaluate, evaluate_split, format_accuracy_table,
                               predict_next_tokens, select_evenly, shard_evenly)
from rpt.data.prompts import PromptSettings
from rpt.rollout.engine import Completion, SamplingParams
from rpt.rollout.groups import Group, RewardSettings, response_text, score_groups

REPO = Path(__file__).resolve().parents[2]

# stories260K's greedy continuation of "Once upon a time" (assets/README.md): at every position the
# argmax is the next token of this text, so the labels below are known without running the model.
GREEDY_TEXT = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."

# TinyStories-style documents for the prepared-data fixture.
STORIES = [
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she "
    "saw a big red ball under a tree. She ran to the ball and kicked it high into the sky. Lily laughed and "
    "laughed. Her mom smiled and said, \"Good job, Lily!\"",
    "Tom had a small dog named Max. Max liked to run and jump in the grass. One day, Max found a stick and "
    "brought it to Tom. Tom threw the stick far away, and Max ran fast to get it. They played all day until "
    "the sun went down. Then they went home and ate dinner.",
    "Once upon a time, there was a big bear who lived in the forest. The bear was hungry and wanted to find "
    "some honey. He looked in a tree and saw a bee. The bee was angry and said, \"Go away!\" The bear was sad, "
    "but then he found some berries. He ate them and was happy.",
    "One day, a little bird wanted to fly to the sun. The bird flapped its wings and flew up and up. But the "
    "sun was too hot, so the bird flew back down to its nest. Its mom gave it a hug and said, \"You are brave, "
    "but the sun is very far away.\" The bird smiled and went to sleep.",
    "Sara and Ben went to the beach with their dad. They built a big sand castle with a tall tower. A wave "
    "came and knocked the castle down. Sara was sad, but Ben said, \"Let's build it again!\" They built a new "
    "castle, even bigger than before. Dad took a picture and they all laughed.",
]


@pytest.fixture(scope="module")
def stories_eval_data(stories_dir, tmp_path_factory):
    """A prepared-data directory: the stories scored by stories260K with the real pipeline (rpt.data.prepare),
    two held out for the easy/medium/hard splits."""
    from rpt.data.prepare import prepare

    root = tmp_path_factory.mktemp("eval_data")
    corpus = root / "stories.txt"
    corpus.write_text("\n<|endoftext|>\n".join(STORIES) + "\n")
    out = root / "prepared"
    prepare(corpus, stories_dir, out, heldout_docs=2, min_context=8, continuation_tokens=4, max_context=64,
            docs_per_chunk=2, progress=False, device="cpu")
    return out


@pytest.mark.parametrize("num_items, world_size", [(10, 1), (10, 3), (7, 2), (2, 4), (1, 2)])
def test_shard_evenly_covers_every_item_once_in_equal_lengths(num_items, world_size):
    shares = [shard_evenly(num_items, rank, world_size) for rank in range(world_size)]
    assert len({len(indices) for indices, _ in shares}) == 1  # lockstep: every rank the same length
    counted = [i for indices, counts in shares for i, c in zip(indices, counts) if c]
    assert counted == list(range(num_items))  # contiguous blocks in rank order, nothing twice


def test_select_evenly():
    items = list(range(10))
    assert select_evenly(items, 0) == items and select_evenly(items, 20) == items
    assert select_evenly(items, 5) == [0, 2, 4, 6, 8]
    assert select_evenly(items, 3) == [0, 3, 6]


@pytest.mark.parametrize("n, k", [(1, 1), (4, 1), (4, 2), (5, 3), (8, 8)])
def test_pass_at_k_matches_brute_force_over_subsets(n, k):
    for c in range(n + 1):
        outcomes = [True] * c + [False] * (n - c)
        subsets = list(itertools.combinations(outcomes, k))
        brute_force = sum(any(subset) for subset in subsets) / len(subsets)
        assert compute_pass_at_k(np.array([c]), n, k)[0] == pytest.approx(brute_force)
    with pytest.raises(ValueError):
        compute_pass_at_k(np.array([0]), 4, 5)


def test_reasoning_correct_hand_labelled(r1_tokenizer):
    continuation = r1_tokenizer.encode(" the cat sat on", add_special_tokens=False)  # Ġthe Ġcat Ġsat Ġon
    responses = [[
        "<think>\nIt is an article.\n</think>\n\\boxed{ the}",  # x_t exactly: 1
        "</think> \\boxed{ the cat}",  # x_t x_t+1: 1
        "</think> \\boxed{the}",  # missing the leading space: 0
        "</think> \\boxed{ th}",  # stops inside a token: 0
        "\\boxed{ the}",  # no </think>: 0
        "</think> \\boxed{ the cat sat on the}",  # runs past the continuation: 0
    ]]
    sample = Sample(doc_id=0, position=0, context_ids=[1], continuation_ids=continuation)

    def score(texts, extraction):  # the scoring of evaluation's reasoning mode and of training
        group = Group(sample, [1], [Completion([], None, "stop")] * len(texts), texts)
        return (score_groups([group], r1_tokenizer, RewardSettings("prefix_match", extraction)) == 1).tolist()

    assert score(responses[0], "boxed") == [[True, True, False, False, False, False]]
    assert score([" the", " the cat", "the"], "raw") == [[True, True, False]]


def test_response_text_keeps_spaces_and_think_drops_only_final_eos(stories_tokenizer, r1_tokenizer):
    lily_ran = stories_tokenizer.encode(" Lily ran", add_special_tokens=False)  # ▁Lily ▁r an
    eos = stories_tokenizer.eos_token_id
    assert response_text(stories_tokenizer, Completion(lily_ran + [eos], None, "stop")) == " Lily ran"
    assert response_text(stories_tokenizer, Completion(lily_ran, None, "length")) == " Lily ran"
    think = r1_tokenizer.encode("</think> x", add_special_tokens=False)
    assert response_text(r1_tokenizer, Completion(think, None, "length"), "<p>") == "<p></think> x"


@pytest.fixture(scope="module")
def stories_model(stories_dir):
    from rpt.model import load_model

    return load_model(stories_dir)


@pytest.fixture(scope="module")
def greedy_samples(stories_tokenizer):
    """Samples cut from GREEDY_TEXT at every position from 2 on; context without BOS, like the data pipeline."""
    ids = stories_tokenizer.encode(GREEDY_TEXT, add_special_tokens=False)
    return [Sample(doc_id=0, position=t, context_ids=ids[:t], continuation_ids=ids[t:t + 4])
            for t in range(2, len(ids))]


def test_standard_mode_hand_labelled(stories_model, stories_tokenizer, greedy_samples):
    # Every greedy sample is right; corrupt the target of every third one -> exactly those are wrong.
    wrong = {i for i in range(len(greedy_samples)) if i % 3 == 0}
    samples = [Sample(s.doc_id, s.position, s.context_ids,
                      [(s.continuation_ids[0] + 1) % 512, *s.continuation_ids[1:]] if i in wrong
                      else s.continuation_ids)
               for i, s in enumerate(greedy_samples)]
    result = evaluate_split(stories_model, stories_tokenizer, None, samples, "standard", batch_size=5)
    assert result.num_samples == len(samples)
    assert result.sums["standard_acc"] == len(samples) - len(wrong)
    assert [record["correct"] for record in result.records] == [i not in wrong for i in range(len(samples))]


def test_left_padded_batches_match_single_forwards(stories_model, stories_tokenizer, greedy_samples):
    contexts = [[stories_tokenizer.bos_token_id] + s.context_ids for s in greedy_samples[::4]]
    # Shuffled lengths so that batches mix short and long contexts.
    contexts = [contexts[i] for i in np.random.default_rng(0).permutation(len(contexts))]
    batched = predict_next_tokens(stories_model, contexts, pad_id=0, batch_size=3)
    with torch.no_grad():
        single = [int(stories_model(torch.tensor([c])).logits[0, -1].argmax()) for c in contexts]
    assert batched.tolist() == single


def test_reasoning_mode_near_greedy_equals_standard(stories_dir, stories_tokenizer, stories_eval_data):
    """One raw token sampled at temperature 1e-4 is the argmax: reasoning accuracy = standard accuracy per
    split, through the real HF engine, prompt builder, reward and data pipeline."""
    from rpt.model import load_model
    from rpt.rollout.hf_engine import HFEngine

    model = load_model(stories_dir)
    engine = HFEngine(load_model(stories_dir), stories_tokenizer.eos_token_id, stories_tokenizer.pad_token_id)
    standard = evaluate(model, stories_tokenizer, None, stories_eval_data, mode="standard", max_samples=24)
    assert model.training  # put back in train mode
    reasoning = evaluate(None, stories_tokenizer, engine, stories_eval_data, mode="reasoning", max_samples=24,
                         prompt=PromptSettings(template="raw", chat=False, think_prefill=False), extraction="raw",
                         sampling=SamplingParams(n=2, temperature=1e-4, max_tokens=1), pass_k=(2,), batch_size=8)
    for split in ("easy", "medium", "hard"):
        assert standard[f"{split}/num_samples"] == reasoning[f"{split}/num_samples"] == 24
        assert 0 < standard[f"{split}/standard_acc"] < 1
        assert reasoning[f"{split}/reasoning_acc"] == standard[f"{split}/standard_acc"]
        assert reasoning[f"{split}/reasoning_pass@2"] == standard[f"{split}/standard_acc"]  # both samples agree


def test_format_accuracy_table_layout():
    table = format_accuracy_table([
        ("standard", "Qwen2.5-14B", {"easy": 0.419, "medium": 0.3003, "hard": 0.2065}),
        ("reasoning", "RPT-14B", {"easy": 0.4511, "medium": 0.3356, "hard": 0.2375}),
    ])
    lines = table.splitlines()
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == ["", "Easy", "Medium", "Hard"]
    assert lines[2].startswith("| Standard next-token prediction")
    assert [cell.strip() for cell in lines[3].strip("|").split("|")] == ["Qwen2.5-14B", "41.90", "30.03", "20.65"]
    assert lines[4].startswith("| Next-token reasoning")
    assert [cell.strip() for cell in lines[5].strip("|").split("|")] == ["RPT-14B", "45.11", "33.56", "23.75"]


def load_evaluate_cli():
    """launch/evaluate.py as a module (launch/ is not a package), to run the CLI in this process."""
    spec = importlib.util.spec_from_file_location("evaluate_cli", REPO / "launch" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_ranks_match_one_process(stories_dir, stories_tokenizer, stories_model, stories_eval_data, tmp_path,
                                     capsys):
    """Under torchrun with 2 ranks (gloo), one launch: `launch/evaluate.py accuracy` writes the same numbers
    and per-sample output as 1 process in both modes (batches of 3 do not align with the ranks' blocks of 8),
    and standard mode on an FSDP2-sharded model gives the numbers of the plain model in 1 process. Then
    `table` reads what the CLI wrote."""
    from tests.conftest import run_torchrun

    # the training preset plus the same --section.key=value overrides training takes
    common = ["accuracy", "--config", str(REPO / "launch/configs/tiny.yaml"), f"--model.path={stories_dir}",
              f"--data.path={stories_eval_data}", "--rollout.max_response_tokens=2", "--rollout.temperature=1.0",
              "--mode", "standard", "reasoning", "--max-samples", "15", "--num-samples", "3", "--pass-k", "2", "3",
              "--batch-size", "3", "--name", "stories260K"]
    run_torchrun(Path(__file__).with_name("dist_eval_worker.py"),
                 [str(stories_dir), str(stories_eval_data), str(tmp_path / "fsdp.json"), "--", *common,
                  "--out", str(tmp_path / "two")], nproc=2)
    cli = load_evaluate_cli()
    cli.main([*common, "--out", str(tmp_path / "one")])
    single = capsys.readouterr().out

    one, two = (json.loads((tmp_path / run / "accuracy.json").read_text()) for run in ("one", "two"))
    # sums of per-context pass@k fractions over 2 ranks are added in another order: equal to rounding
    assert one["results"]["standard"] == two["results"]["standard"]
    assert one["results"]["reasoning"] == pytest.approx(two["results"]["reasoning"], rel=1e-12, abs=0)
    assert one["results"]["reasoning"]["easy/num_samples"] == 15
    assert "| stories260K (Pass@3)" in single and "| Next-token reasoning" in single
    # the data was prepared without --split-proxy: the proxy drew the buckets, and the output says so
    assert f"held-out splits scored by {stories_dir.resolve()} (llama, 0.29M parameters) (the training proxy)" in single
    assert one["split_scorer"] == two["split_scorer"] and one["split_scorer"]["path"] == str(stories_dir.resolve())
    for name in ("standard_predictions.jsonl", "reasoning_responses.jsonl"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text()
    responses = [json.loads(line) for line in (tmp_path / "one" / "reasoning_responses.jsonl").read_text().splitlines()]
    assert len(responses) == 3 * 15 * 3  # splits x samples x responses
    accuracy = np.mean([r["correct"] for r in responses if r["split"] == "hard"])
    assert accuracy == pytest.approx(one["results"]["reasoning"]["hard/reasoning_acc"])

    sharded = json.loads((tmp_path / "fsdp.json").read_text())
    assert sharded["world_size"] == 2
    reference = evaluate(stories_model, stories_tokenizer, None, stories_eval_data, mode="standard", max_samples=23)
    assert sharded["metrics"] == reference and reference["easy/num_samples"] == 23

    cli.main(["table", str(tmp_path / "one" / "accuracy.json"), str(tmp_path / "two" / "accuracy.json")])
    table = capsys.readouterr().out.splitlines()
    assert table[2].startswith("| Standard next-token prediction") and table[3] == table[4]  # one row per file
    assert table[5].startswith("| Next-token reasoning")
    assert table[-2:] == [f"stories260K: held-out splits scored by {stories_dir.resolve()}"] * 2


def test_table_names_each_runs_split_scorer_and_warns_when_they_differ(tmp_path, capsys):
    metrics = {"easy/standard_acc": 0.5, "medium/standard_acc": 0.25, "hard/standard_acc": 0.125}
    paths = []
    for name, scorer in (("base", "/models/R1-Distill-Qwen-14B"), ("rpt", "/models/R1-Distill-Qwen-1.5B")):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps({"name": name, "split_scorer": {"path": scorer},
                                         "results": {"standard": metrics}}))
    cli = load_evaluate_cli()
    cli.main(["table", str(paths[0]), str(paths[0])])
    same = capsys.readouterr().out.splitlines()
    assert same[-2:] == ["base: held-out splits scored by /models/R1-Distill-Qwen-14B"] * 2
    cli.main(["table", *map(str, paths)])
    different = capsys.readouterr().out.splitlines()
    assert different[-3:-1] == ["base: held-out splits scored by /models/R1-Distill-Qwen-14B",
                                "rpt: held-out splits scored by /models/R1-Distill-Qwen-1.5B"]
    assert different[-1].startswith("warning: the rows' splits were bucketed by different models")
