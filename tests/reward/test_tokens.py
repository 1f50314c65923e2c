"""token_bytes / token_text / first_token_id on the real Qwen2, R1-distill and stories260K tokenizers.

References: hand-read pieces, the source text's own UTF-8 bytes, and the tokenizer's decoder run on every
single token of the vocabulary."""
import json
import unicodedata

import pytest
import tokenizers

from rpt.reward import first_token_id, token_bytes, token_text
from rpt.reward.tokens import tokenizer_bytes


def test_qwen2_hand_pieces(qwen2_tokenizer):
    assert token_bytes(qwen2_tokenizer, [9707, 1879]) == [b"Hello", b" world"]  # 'Hello', 'Ġworld'
    ids = qwen2_tokenizer.encode(" 龘 🦜", add_special_tokens=False)
    # Both characters are split inside their UTF-8 bytes: 龘 = E9 BE 98, 🦜 = F0 9F A6 9C.
    assert token_bytes(qwen2_tokenizer, ids) == [b" \xe9", b"\xbe", b"\x98", b" \xf0\x9f", b"\xa6", b"\x9c"]


def test_qwen2_special_tokens_are_their_text(qwen2_tokenizer, r1_tokenizer):
    assert token_bytes(qwen2_tokenizer, [151643, 151644]) == [b"<|endoftext|>", b"<|im_start|>"]
    assert token_bytes(r1_tokenizer, [151649, 151644, 151643]) == [b"</think>", "<｜User｜>".encode(),
                                                                   "<｜end▁of▁sentence｜>".encode()]  # ▁ kept


def test_qwen2_every_token_agrees_with_the_decoder(qwen2_tokenizer):
    backend = qwen2_tokenizer.backend_tokenizer
    size = len(qwen2_tokenizer)
    table = token_bytes(qwen2_tokenizer, range(size))
    decoded = backend.decode_batch([[token_id] for token_id in range(size)], skip_special_tokens=False)
    partial = 0
    for token_id, (raw, text) in enumerate(zip(table, decoded)):
        # A whole-character token decodes to exactly its bytes; a partial one decodes to U+FFFD replacements.
        assert raw.decode("utf-8", errors="replace") == text, token_id
        partial += "\ufffd" in text
    assert partial > 1000  # the check above did cover tokens holding parts of characters


def test_qwen2_real_text_round_trips(qwen2_tokenizer, omni_math_path):
    rows = [json.loads(line) for line in open(omni_math_path)][:200]
    for row in rows:
        text = row["problem"] + "\n" + row["solution"]
        ids = qwen2_tokenizer.encode(text, add_special_tokens=False)
        # Qwen2 normalizes to NFC before tokenizing, so the tokens spell the NFC form.
        assert b"".join(token_bytes(qwen2_tokenizer, ids)) == unicodedata.normalize("NFC", text).encode()


def test_stories_is_sentencepiece_style_with_byte_fallback(stories_tokenizer):
    assert tokenizer_bytes(stories_tokenizer).style == "sentencepiece"
    # vocab: 265 '▁the', 299 'ing', 3 '<0x00>', 13 '<0x0A>', 233 '<0xE6>'
    assert token_bytes(stories_tokenizer, [265, 299, 3, 13, 233]) == [b" the", b"ing", b"\x00", b"\n", b"\xe6"]
    assert token_bytes(stories_tokenizer, [0, 1, 2]) == [b"<unk>", b"<s>", b"</s>"]


def test_stories_text_round_trips_with_the_dummy_prefix(stories_tokenizer):
    text = "Once upon a time, there was a little girl named Lily.\nShe saw a 日 café!"
    ids = stories_tokenizer.encode(text, add_special_tokens=False)
    # SentencePiece prepends one `▁` to the input, so the tokens spell " " + text; 日 is three fallback bytes.
    assert b"".join(token_bytes(stories_tokenizer, ids)) == (" " + text).encode()


def test_stories_every_token_agrees_with_the_decoder(stories_tokenizer):
    backend = stories_tokenizer.backend_tokenizer
    for token_id, raw in enumerate(token_bytes(stories_tokenizer, range(len(stories_tokenizer)))):
        expected = raw.decode("utf-8", errors="replace")
        # The decoder strips one leading space of the whole output; special tokens decode to their content.
        assert backend.decode([token_id], skip_special_tokens=False) == expected.removeprefix(" "), token_id


def test_table_is_cached_per_tokenizer(qwen2_tokenizer, stories_tokenizer):
    assert tokenizer_bytes(qwen2_tokenizer) is tokenizer_bytes(qwen2_tokenizer)
    assert tokenizer_bytes(qwen2_tokenizer) is not tokenizer_bytes(stories_tokenizer)


def test_unknown_ids_raise(stories_tokenizer):
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        token_bytes(stories_tokenizer, [5, 512])
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        token_bytes(stories_tokenizer, [-1])


def test_unsupported_tokenizers_raise_clearly():
    wordpiece = tokenizers.Tokenizer(tokenizers.models.WordPiece({"[UNK]": 0, "a": 1, "##b": 2}, unk_token="[UNK]"))
    wordpiece.decoder = tokenizers.decoders.WordPiece()
    with pytest.raises(ValueError, match="cannot map the tokens of Tokenizer to bytes.*WordPiece"):
        token_bytes(wordpiece, [1])
    with pytest.raises(TypeError, match="fast tokenizer"):
        token_bytes(object(), [1])


def test_token_text_keeps_the_leading_space_and_partial_bytes(stories_tokenizer, qwen2_tokenizer):
    assert stories_tokenizer.decode([265]) == "the"  # decode() loses the space the token stands for
    assert token_text(stories_tokenizer, [265]) == " the"
    assert token_text(qwen2_tokenizer, [18137]) == " \udce9"  # b" \xe9": half of 龘, kept as an escape
    # generated ids beyond the tokenizer (padded embedding rows) add nothing instead of raising
    assert token_text(qwen2_tokenizer, [9707, 152000, 1879, -1]) == "Hello world"


def test_first_token_id_reads_text_as_mid_document(stories_tokenizer, qwen2_tokenizer):
    assert first_token_id(stories_tokenizer, " the cat") == 265
    assert first_token_id(stories_tokenizer, "ing") == 299  # not '▁' (410): no dummy prefix
    assert first_token_id(stories_tokenizer, "日") == 233  # <0xE6>, the first fallback byte
    assert first_token_id(qwen2_tokenizer, " world peace") == 1879
    assert first_token_id(qwen2_tokenizer, "") is None
    assert first_token_id(qwen2_tokenizer, None) is None
    # stray bytes (token_text of a cut character) are read as U+FFFD rather than raising
    replacement = qwen2_tokenizer.encode(" \ufffd", add_special_tokens=False)[0]
    assert first_token_id(qwen2_tokenizer, " \udce9\udcbe") == replacement
    assert first_token_id(stories_tokenizer, "\udce9") == first_token_id(stories_tokenizer, "\ufffd")
