"""Eq. 3's ground truth is the rest of the document, end to end: a prepared data dir (real stories260K scoring
of OmniMATH) -> SampleStream -> the training's rollout path (rpt.rollout.groups: prompt, generate, response
text, reward) scores a correct prediction of 12 tokens (and of 40) as 1; under the former 8-token cap the
same prediction scored 0. A scripted engine "generates" the ground-truth tokens themselves."""
from rpt.data.corpus import make_sample
from rpt.data.prompts import PromptSettings
from rpt.data.samples_io import SampleStream
from rpt.reward import token_bytes
from rpt.reward.tokens import tokenizer_bytes
from rpt.rollout.engine import Completion, SamplingParams
from rpt.rollout.groups import RewardSettings, generate_groups, score_groups

PREFILL = "</think>\n\\boxed{"  # the response opens the box; the generated tokens are its content


class ScriptedEngine:
    """Returns, for prompt i, one completion per token list in scripts[i] (finish_reason "length")."""

    def __init__(self, scripts: list[list[list[int]]]):
        self.scripts = scripts

    def generate(self, prompt_ids, params, seeds=None):
        assert len(prompt_ids) == len(self.scripts) and all(len(s) == params.n for s in self.scripts)
        return [[Completion(list(ids), None, "length") for ids in script] for script in self.scripts]


def find_sample(stream, tokenizer, num_tokens: int):
    """The first sample (corpus order) whose next `num_tokens` tokens are whole UTF-8 text without braces (so
    the box holds them verbatim), whose last of them has two characters or more (so that dropping one
    character stops inside it), and which are not the whole rest of the document; with its split index."""
    for index in range(stream.num_samples):
        sample = stream.sample_at(index)
        if len(sample.continuation_ids) <= num_tokens:
            continue
        pieces = token_bytes(tokenizer, sample.continuation_ids[:num_tokens])
        try:
            text, last = b"".join(pieces).decode("utf-8"), pieces[-1].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if "{" not in text and "}" not in text and len(last) >= 2:
            return index, sample
    raise AssertionError(f"no sample with {num_tokens} plain tokens left")


def test_a_12_token_correct_prediction_earns_1_from_a_prepared_dir(tiny_data_dir, stories_tokenizer):
    stream = SampleStream(tiny_data_dir, "train", shuffle=False)
    assert stream.manifest["continuation_tokens"] is None
    index, sample = find_sample(stream, stories_tokenizer, 12)
    document = stream.docs.tokens(int(stream.rows[index]))
    assert sample.continuation_ids == document[sample.position:].tolist()  # x_>=t, to the document's end
    _, long_sample = find_sample(stream, stories_tokenizer, 40)

    table = tokenizer_bytes(stories_tokenizer).table
    close, hash_sign = [table.index(b"}")], [table.index(b"#")]
    truth = sample.continuation_ids
    twelfth = table[truth[11]]
    shorter = [i for i, piece in enumerate(table) if piece == twelfth[:-1]]  # the 12th token minus a byte
    assert shorter, "no token spells the 12th token without its last byte"
    scripts = [[truth[:12] + close,  # the next 12 tokens exactly: 1
                truth[:11] + shorter[:1] + close,  # stops inside the 12th token: 0
                truth[:13] + close,  # 13 tokens: 1
                truth[:12] + hash_sign + close],  # one wrong byte after the 12th token: 0
               [long_sample.continuation_ids[:40] + close] * 4]  # 40 tokens: 1
    prompt = PromptSettings(template="raw", chat=False, think_prefill=False, response_prefill=PREFILL)
    groups = generate_groups(ScriptedEngine(scripts), stories_tokenizer, [sample, long_sample], prompt,
                             SamplingParams(n=4), extraction="boxed", seed=0)
    assert groups[0].responses[0] == PREFILL + b"".join(token_bytes(stories_tokenizer, truth[:12])).decode() + "}"
    rewards = score_groups(groups, stories_tokenizer, RewardSettings("prefix_match", "boxed"))  # (B, G)
    assert rewards.tolist() == [[1.0, 0.0, 1.0, 0.0], [1.0] * 4]
    assert groups[0].diagnostics["matched_tokens"].tolist() == [12, 11, 13, 12]

    # the former default cut the ground truth at 8 tokens, so the same correct prediction scored 0
    capped = make_sample(document, sample.position, stream.manifest["max_context"], 8, doc_id=sample.doc_id)
    capped_groups = generate_groups(ScriptedEngine([scripts[0][:1]]), stories_tokenizer, [capped], prompt,
                                    SamplingParams(n=1), extraction="boxed", seed=0)
    assert score_groups(capped_groups, stories_tokenizer, RewardSettings()).tolist() == [[0.0]]
