"""Continual NTP (Table 2 baseline): windows cover every document token once, the chunked cross-entropy
equals a plain transformers forward's, the held-out loss falls over a few steps on stories260K's own kind
of text (TinyStories-style stories from one template, two held out), and 2 FSDP ranks agree with 1 process."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rpt.data.prompts import special_prefix_ids
from rpt.data.windows import WindowStream
from rpt.policy import PolicyLogprobs
from rpt.model import load_model
from rpt.ntp import ntp_eval_loss
from tests.conftest import run_torchrun
from tests.workers import ntp_worker

WORKER = Path(ntp_worker.__file__)


NAMES = ["Lily", "Tom", "Sara", "Ben", "Mia", "Max", "Anna", "Sam", "Lucy", "Tim"]
THINGS = ["ball", "kite", "boat", "doll", "drum", "book", "hat", "cup", "car", "bell"]
COLORS = ["red", "blue", "green", "yellow", "pink", "big", "small", "shiny", "old", "new"]


def story(i: int) -> str:
    """Ten stories of one template: what is learnable from the train ones carries over to held-out ones."""
    name, thing, color = NAMES[i], THINGS[3 * i % 10], COLORS[7 * i % 10]
    return (f"Once upon a time, there was a little child named {name}. {name} had a {color} {thing}. Every day, "
            f"{name} played with the {color} {thing} in the park. One day, the {color} {thing} was lost. {name} "
            f"looked under the tree and found the {color} {thing}. {name} was very happy and said, \"I love my "
            f"{color} {thing}!\" The end.")


@pytest.fixture(scope="module")
def stories_data(stories_dir, tmp_path_factory):
    """The ten stories scored by stories260K with the real pipeline; two documents held out."""
    from rpt.data.prepare import prepare

    root = tmp_path_factory.mktemp("ntp_data")
    corpus = root / "stories.txt"
    corpus.write_text("\n<|endoftext|>\n".join(story(i) for i in range(10)) + "\n")
    prepare(corpus, stories_dir, root / "prepared", heldout_docs=2, min_context=8, continuation_tokens=4,
            max_context=64, docs_per_chunk=4, progress=False, device="cpu")
    return root / "prepared"


def test_windows_cover_every_token_once(stories_data, stories_tokenizer):
    prefix = special_prefix_ids(stories_tokenizer)
    stream = WindowStream(stories_data, 16, prefix, shuffle=False)
    docs = stream.docs
    for row in np.flatnonzero(docs.splits == "train"):
        windows = [stream.window(i) for i in np.flatnonzero(stream.rows == row)]
        document = prefix + docs.tokens(row).tolist()
        assert [w[0] for w in windows[1:]] == [w[-1] for w in windows[:-1]]  # each starts where the last ended
        assert sum(len(w) - 1 for w in windows) == len(document) - 1  # every id after the first is a target once
        assert windows[0][:len(prefix) + 3] == document[:len(prefix) + 3]
    resumed = WindowStream(stories_data, 16, prefix, seed=4)
    first = WindowStream(stories_data, 16, prefix, seed=4)
    first.next_batch(5)
    resumed.load_state_dict(first.state_dict())
    assert resumed.next_batch(3) == first.next_batch(3)
    with pytest.raises(ValueError, match="window_tokens=16"):
        WindowStream(stories_data, 8, prefix).load_state_dict(first.state_dict())


def test_cross_entropy_matches_a_plain_forward(stories_data, stories_dir, stories_tokenizer):
    model = load_model(stories_dir)
    stream = WindowStream(stories_data, 24, special_prefix_ids(stories_tokenizer), doc_split="heldout",
                          shuffle=False)
    windows = [stream.window(i) for i in range(stream.num_windows)]
    with torch.no_grad():
        losses = [torch.nn.functional.cross_entropy(model(torch.tensor([w[:-1]])).logits[0], torch.tensor(w[1:]),
                                                    reduction="sum") for w in windows]
    expected = float(sum(losses)) / sum(len(w) - 1 for w in windows)
    loss = ntp_eval_loss(PolicyLogprobs(model), windows, micro_batch_tokens=60, packed_rows=False, chunk_size=7,
                         device="cpu")
    assert loss == pytest.approx(expected, rel=1e-5)


def test_heldout_loss_falls_and_two_ranks_agree(stories_data, stories_dir, tmp_path):
    steps = 4
    single = ntp_worker.run(stories_dir, stories_data, steps)
    # measured: 1.499 -> 1.146 nats at lr 1e-3 (rises at 3e-3 and above)
    assert single["heldout_loss"][1] < single["heldout_loss"][0] - 0.2, single
    run_torchrun(WORKER, [str(stories_dir), str(stories_data), str(tmp_path / "out.json"), str(steps)])
    double = json.loads((tmp_path / "out.json").read_text())
    assert double["world_size"] == 2 and double["stream_position"] == single["stream_position"]
    for key in ("heldout_loss", "train_loss", "grad_norm"):
        np.testing.assert_allclose(double[key], single[key], rtol=1e-4, atol=1e-5, err_msg=key)
