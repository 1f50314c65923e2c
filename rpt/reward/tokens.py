"""Token ids -> the raw bytes each token stands for, read from the tokenizer's own pieces (Eq. 3, Section 3.2).

The prefix reward (Eq. 3) needs the byte length of every ground-truth token, including tokens that hold
only part of a multi-byte UTF-8 character; `decode()` cannot give those (it returns U+FFFD, and
SentencePiece decoders strip the leading space of the first token). Two piece styles are mapped:
- byte-level BPE (GPT-2, Qwen2; the backend's decoder is ByteLevel): every piece character stands for one
  byte through the GPT-2 byte-to-unicode alphabet (`Ġ` = space, `Ċ` = newline, ...).
- SentencePiece style (Llama, stories260K; decoder Metaspace or Replace `▁` -> space, optionally
  ByteFallback): `▁` is a space and, with byte fallback, a `<0xNN>` piece is the single byte NN.
Added and special tokens (`<|endoftext|>`, `</think>`, `<s>`) are the UTF-8 bytes of their content.
Anything else (WordPiece, Unigram without `▁`) raises a ValueError naming the decoder it found.

Each tokenizer's id -> bytes table is built once and cached for the life of the process (the loop calls
`token_bytes` for every sample of every step), keyed by the tokenizer object, which the cache keeps alive.

Deviation from the paper: the paper decodes tokens one at a time; reading pieces instead gives the same
bytes for whole-character tokens and well-defined bytes for partial ones, which the paper relies on.
"""
import json
import re
from dataclasses import dataclass
from typing import Sequence

import tokenizers

from rpt.reward.prefix_match import encode_utf8

_BYTE_FALLBACK_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def gpt2_unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's bytes_to_unicode: printable Latin-1 characters stand for themselves, the other
    68 bytes are shifted to U+0100 onwards, so every byte has a visible one-character piece."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    byte_values, code_points = list(printable), list(printable)
    shifted = 0
    for byte in range(256):
        if byte not in printable:
            byte_values.append(byte)
            code_points.append(256 + shifted)
            shifted += 1
    return {chr(code_point): byte for byte, code_point in zip(byte_values, code_points)}


@dataclass(frozen=True)
class TokenizerBytes:
    """What the reward needs from one tokenizer, computed once."""
    table: list[bytes | None]  # token id -> bytes; None for ids the tokenizer does not assign
    style: str  # "byte_level" or "sentencepiece"
    space_marker: str | None  # the piece character for a space in SentencePiece style ("▁"), else None
    backend: tokenizers.Tokenizer


_CACHE: dict[int, tuple[object, TokenizerBytes]] = {}


def _decoder_parts(decoder_state: dict) -> list[dict]:
    """The decoder and, recursively, the members of a Sequence decoder."""
    parts = [decoder_state]
    for member in decoder_state.get("decoders") or []:
        parts += _decoder_parts(member)
    return parts


def _backend_of(tokenizer) -> tokenizers.Tokenizer:
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not isinstance(backend, tokenizers.Tokenizer):
        raise TypeError(f"token_bytes needs a Hugging Face fast tokenizer or a tokenizers.Tokenizer, got "
                        f"{type(tokenizer).__name__} (no backend_tokenizer)")
    return backend


def build_tokenizer_bytes(tokenizer) -> TokenizerBytes:
    """Build the id -> bytes table of `tokenizer` (uncached; use `tokenizer_bytes` for the cached one)."""
    backend = _backend_of(tokenizer)
    parts = _decoder_parts(json.loads(backend.decoder.__getstate__())) if backend.decoder is not None else []
    part_types = [part.get("type") for part in parts]
    space_marker = None
    for part in parts:
        if part.get("type") == "Metaspace":
            space_marker = part.get("replacement", "▁")
        elif part.get("type") == "Replace" and part.get("content") == " " and "String" in part.get("pattern", {}):
            space_marker = part["pattern"]["String"]
    if "ByteLevel" in part_types:
        style = "byte_level"
        unicode_to_byte = gpt2_unicode_to_byte()
    elif space_marker is not None:
        style = "sentencepiece"
        byte_fallback = "ByteFallback" in part_types or bool(getattr(backend.model, "byte_fallback", False))
    else:
        raise ValueError(f"cannot map the tokens of {type(tokenizer).__name__} to bytes: its decoder is "
                         f"{part_types or 'absent'}; supported are byte-level BPE (a ByteLevel decoder) and "
                         f"SentencePiece style (a Metaspace decoder or a Replace of the space marker, with "
                         f"optional ByteFallback)")

    vocab = backend.get_vocab(with_added_tokens=False)  # piece -> id
    added = backend.get_added_tokens_decoder()  # id -> AddedToken
    table: list[bytes | None] = [None] * (max([*vocab.values(), *added.keys()]) + 1)
    for piece, token_id in vocab.items():
        if style == "byte_level":
            try:
                table[token_id] = bytes(unicode_to_byte[char] for char in piece)
            except KeyError as error:
                raise ValueError(f"piece {piece!r} (id {token_id}) has a character outside the byte-level "
                                 f"alphabet: {error}") from None
        else:
            fallback = _BYTE_FALLBACK_PIECE.fullmatch(piece) if byte_fallback else None
            table[token_id] = (bytes([int(fallback.group(1), 16)]) if fallback
                               else piece.replace(space_marker, " ").encode("utf-8"))
    for token_id, added_token in added.items():
        table[token_id] = added_token.content.encode("utf-8")  # special and added tokens are literal text
    return TokenizerBytes(table=table, style=style, space_marker=space_marker if style == "sentencepiece" else None,
                          backend=backend)


def tokenizer_bytes(tokenizer) -> TokenizerBytes:
    """The cached `TokenizerBytes` of `tokenizer` (built on first use: 0.16 s for Qwen2's 151,646 ids)."""
    cached = _CACHE.get(id(tokenizer))
    if cached is None:
        cached = (tokenizer, build_tokenizer_bytes(tokenizer))  # holding the tokenizer keeps its id unique
        _CACHE[id(tokenizer)] = cached
    return cached[1]


def _look_up(table: list[bytes | None], ids: Sequence[int]) -> list[bytes] | None:
    """The table entries of `ids`, or None if any id is not assigned (negative ids would index from the end)."""
    try:
        pieces = [table[token_id] for token_id in ids]
    except IndexError:
        return None
    return None if None in pieces or min(ids, default=0) < 0 else pieces


def token_bytes(tokenizer, ids: Sequence[int]) -> list[bytes]:
    """The raw bytes of each token in `ids` (len(ids) entries), from the tokenizer's own pieces: a token that
    is part of a multi-byte UTF-8 character still has its bytes. Raises ValueError for an id the tokenizer
    does not assign (negative, or beyond its vocabulary)."""
    table = tokenizer_bytes(tokenizer).table
    pieces = _look_up(table, ids)
    if pieces is None:
        unknown = [token_id for token_id in ids if not 0 <= token_id < len(table) or table[token_id] is None]
        raise ValueError(f"token ids {unknown[:8]} are not in the tokenizer's vocabulary of {len(table)} ids")
    return pieces


def token_text(tokenizer, ids: Sequence[int]) -> str:
    """The exact text of `ids` for the `raw` extraction mode: the concatenated token bytes decoded as UTF-8,
    with bytes that are not valid UTF-8 (a token cut inside a character) kept as surrogate escapes, which
    the reward encodes back to the same bytes. Unlike `decode()` it never drops the leading space of a
    SentencePiece `▁` token, never merges bytes into U+FFFD, and keeps special tokens.
    Such text holds lone surrogates: write it with json.dumps (ASCII escapes) or errors="surrogateescape".
    Model output must never raise, so ids the tokenizer does not assign (a model's padded vocabulary rows,
    e.g. Qwen2's 152,064 embedding rows against 151,665 tokenizer ids) contribute no bytes."""
    table = tokenizer_bytes(tokenizer).table
    pieces = _look_up(table, ids)
    if pieces is None:
        pieces = [table[token_id] if 0 <= token_id < len(table) and table[token_id] is not None else b""
                  for token_id in ids]
    return b"".join(pieces).decode("utf-8", errors="surrogateescape")


def first_token_id(tokenizer, text: str | None) -> int | None:
    """The first token of `text` as the policy tokenizer would read it in the middle of a document (no
    special tokens, no BOS); None for None or "" (Appendix A first-token and dense rewards).

    SentencePiece-style tokenizers prepend a `▁` to the start of an input (the "dummy prefix"), which would
    turn `ing` into [`▁`, `ing`]; their text goes straight to the BPE model with spaces replaced by the
    marker, skipping normalizer and pre-tokenizer. Byte-level tokenizers encode the text as given.
    Bytes that are not valid UTF-8 (surrogate escapes from `token_text`) cannot be tokenized as text: they
    are read as U+FFFD, so such a prediction does not start with the true token unless it did before them."""
    if not text:
        return None
    text = encode_utf8(text).decode("utf-8", errors="replace")  # the tokenizers take valid text only
    info = tokenizer_bytes(tokenizer)
    if info.style == "sentencepiece":
        pieces = info.backend.model.tokenize(text.replace(" ", info.space_marker))
        return pieces[0].id if pieces else None
    ids = info.backend.encode(text, add_special_tokens=False).ids
    return ids[0] if ids else None
