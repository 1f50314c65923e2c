"""Eq. 3's ground truth is the rest of the document: a prepared data dir (real stories260K scoring of
OmniMATH) -> SampleStream -> the reward scores a correct prediction of 12 tokens (and of 40) as 1; under the
former 8-token cap the same prediction scored 0."""
from rpt.data.corpus import make_sample
from rpt.data.samples_io import SampleStream
from rpt.reward import compute_rewards, token_bytes


def boxed(text: str) -> str:
    return f"Reading the context again.\n</think>\n\nThe next tokens are \\boxed{{{text}}}"


def find_sample(stream, tokenizer, num_tokens: int):
    """The first sample (corpus order) whose next `num_tokens` tokens are whole UTF-8 text without braces (so
    the box holds them verbatim), whose last of them has two characters or more (so that dropping one
    character stops inside it), and which are not the whole rest of the document; with that text."""
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
            return index, sample, text
    raise AssertionError(f"no sample with {num_tokens} plain tokens left")


def test_a_12_token_correct_prediction_earns_1_from_a_prepared_dir(tiny_data_dir, stories_tokenizer):
    stream = SampleStream(tiny_data_dir, "train", shuffle=False)
    assert stream.manifest["continuation_tokens"] is None
    index, sample, text = find_sample(stream, stories_tokenizer, 12)
    document = stream.docs.tokens(int(stream.rows[index]))
    assert sample.continuation_ids == document[sample.position:].tolist()  # x_>=t, to the document's end

    pieces = token_bytes(stories_tokenizer, sample.continuation_ids)
    thirteenth = pieces[12].decode("utf-8", "replace")
    responses = [boxed(text),  # the next 12 tokens exactly: 1
                 boxed(text[:-1]),  # stops one character short, inside the 12th token: 0
                 boxed(text + thirteenth),  # 13 tokens: 1
                 boxed(text + "#")]  # runs past the 12th token into a wrong byte: 0
    rewards, diagnostics = compute_rewards(responses, [pieces] * 4, group_size=4)
    assert rewards.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert diagnostics["matched_tokens"].tolist()[0] == 12 and diagnostics["matched_tokens"].tolist()[2] == 13

    _, long_sample, long_text = find_sample(stream, stories_tokenizer, 40)
    long_pieces = token_bytes(stories_tokenizer, long_sample.continuation_ids)
    assert compute_rewards([boxed(long_text)], [long_pieces], group_size=1)[0].tolist() == [1.0]

    # the former default cut the ground truth at 8 tokens, so the same correct prediction scored 0
    capped = make_sample(document, sample.position, stream.manifest["max_context"], 8, doc_id=sample.doc_id)
    capped_pieces = token_bytes(stories_tokenizer, capped.continuation_ids)
    assert compute_rewards([boxed(text)], [capped_pieces], group_size=1)[0].tolist() == [0.0]
