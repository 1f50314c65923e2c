"""The engine lifecycle of rpt/rollout/engine.py: the legal-call table, HFEngine enforcing it, and VLLMEngine's
calls checked against a fake that replays vLLM 0.32.0's sleep/wake semantics on a GPU (where the real
sleep mode exists; on CPU it is a no-op, so only a fake can show what a GPU would do)."""
import importlib.util
from types import SimpleNamespace

import pytest
import torch

from rpt.rollout.engine import EngineState, EngineStateError, Lifecycle, SamplingParams

AWAKE, ASLEEP, WEIGHTS_ONLY = EngineState.AWAKE, EngineState.ASLEEP, EngineState.WEIGHTS_ONLY
PARAMS = SamplingParams(n=2, temperature=0.8, max_tokens=3)


def _state_after(*calls: str) -> Lifecycle:
    lifecycle = Lifecycle("Test")
    for call in calls:
        {"sleep": lifecycle.begin_sleep, "wake": lifecycle.begin_wake,
         "update_weights": lifecycle.begin_update_weights}[call]()
    return lifecycle


@pytest.mark.parametrize("start, call, expected", [
    # (state, call) -> the state after it, or the error; the table in rpt/rollout/engine.py, row by row
    ((), "generate", AWAKE), (("sleep",), "generate", EngineStateError),
    (("sleep", "update_weights"), "generate", EngineStateError),
    ((), "update_weights", AWAKE), (("sleep",), "update_weights", WEIGHTS_ONLY),
    (("sleep", "update_weights"), "update_weights", WEIGHTS_ONLY),
    ((), "sleep", ASLEEP), (("sleep",), "sleep", ASLEEP), (("sleep", "update_weights"), "sleep", EngineStateError),
    ((), "wake", AWAKE), (("sleep",), "wake", AWAKE), (("sleep", "update_weights"), "wake", AWAKE),
])
def test_lifecycle_table(start, call, expected):
    lifecycle = _state_after(*start)
    action = {"generate": lifecycle.check_generate, "sleep": lifecycle.begin_sleep, "wake": lifecycle.begin_wake,
              "update_weights": lifecycle.begin_update_weights}[call]
    if expected is EngineStateError:
        with pytest.raises(EngineStateError, match=rf"Test\.{call}\(\) while the engine is"):
            action()
    else:
        action()
        assert lifecycle.state is expected


def test_lifecycle_tells_the_engine_what_to_release_and_restore():
    lifecycle = Lifecycle("Test")
    assert lifecycle.begin_sleep() is True  # AWAKE -> release
    assert lifecycle.begin_sleep() is False  # already released
    assert lifecycle.begin_update_weights() is True  # bring the weights back first
    assert lifecycle.begin_update_weights() is False
    assert lifecycle.begin_wake() is WEIGHTS_ONLY  # the KV cache only
    assert lifecycle.begin_wake() is AWAKE  # nothing
    lifecycle.begin_sleep()
    assert lifecycle.begin_wake() is ASLEEP  # everything


# --- HFEngine ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_engine(stories_dir, stories_tokenizer):
    from rpt.model import load_model
    from rpt.rollout.hf_engine import HFEngine

    return lambda: HFEngine(load_model(stories_dir, "float32"), stories_tokenizer.eos_token_id,
                            stories_tokenizer.pad_token_id)


def test_hf_engine_refuses_the_old_loop_order(hf_engine):
    """The loop before the fix: sleep, update_weights (weights only), then evaluation generated."""
    engine = hf_engine()
    prompt = [[1, 200, 300]]
    engine.generate(prompt, PARAMS)
    engine.sleep()
    with pytest.raises(EngineStateError, match=r"HFEngine\.generate\(\) while the engine is asleep"):
        engine.generate(prompt, PARAMS)
    engine.update_weights((name, p.detach().clone()) for name, p in engine.model.named_parameters())
    with pytest.raises(EngineStateError, match="while the engine is weights-only awake: call wake"):
        engine.generate(prompt, PARAMS)
    with pytest.raises(EngineStateError, match="sleep.. while the engine is weights-only awake"):
        engine.sleep()


def test_hf_engine_legal_order_generates_with_the_pushed_weights(hf_engine):
    engine, reference = hf_engine(), hf_engine()
    prompt = [[1, 200, 300]]
    torch.manual_seed(0)
    perturbed = {name: p.detach() + 0.05 * torch.randn_like(p) for name, p in engine.model.named_parameters()}
    before = engine.generate(prompt, PARAMS, seeds=[5])
    engine.sleep()
    engine.update_weights(perturbed.items())
    engine.wake()
    after = engine.generate(prompt, PARAMS, seeds=[5])
    reference.update_weights(perturbed.items())  # never slept: the same weights by a different path
    expected = reference.generate(prompt, PARAMS, seeds=[5])
    assert [c.token_ids for c in after[0]] == [c.token_ids for c in expected[0]]
    assert max(abs(a - b) for x, y in zip(after[0], expected[0]) for a, b in zip(x.logprobs, y.logprobs)) < 1e-6
    assert [c.logprobs for c in after[0]] != [c.logprobs for c in before[0]]  # the push really changed them
    assert engine.device.type == "cpu" and next(engine.model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("top_p", [1.0, 0.9, 0.5, 0.05])
def test_processed_logprobs_are_transformers_temperature_then_top_p(top_p):
    """The decode loop's distribution equals transformers' own warpers (TemperatureLogitsWarper, then
    TopPLogitsWarper) followed by log_softmax, kept tokens and masked ones alike."""
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    from rpt.rollout.hf_engine import processed_logprobs

    logits = torch.randn(4, 300, generator=torch.Generator().manual_seed(0)) * 3  # (n, V)
    scores = TemperatureLogitsWarper(0.7)(None, logits.clone())
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    expected = scores.log_softmax(dim=-1)
    actual = processed_logprobs(logits, 0.7, top_p)
    assert torch.equal(actual.isinf(), expected.isinf()) and (top_p == 1.0 or actual.isinf().any())
    torch.testing.assert_close(actual[~actual.isinf()], expected[~expected.isinf()], rtol=0, atol=1e-6)


def test_inverse_cdf_sampling_draws_each_token_at_its_probability():
    """200,000 draws from a 6-token distribution with a zero-probability token (top-p's -inf) in the middle
    and at the end: frequencies within 4 standard errors of the probabilities, the masked tokens never."""
    from rpt.rollout.hf_engine import sample_inverse_cdf

    probs = torch.tensor([0.05, 0.3, 0.0, 0.15, 0.5, 0.0])
    logp = probs.log().expand(200_000, -1)  # (n, V), -inf where 0
    tokens = sample_inverse_cdf(logp, torch.Generator().manual_seed(0))  # (n,)
    frequencies = torch.bincount(tokens, minlength=6).double() / len(tokens)
    standard_error = (probs.double() * (1 - probs.double()) / len(tokens)).sqrt()
    assert frequencies[2] == frequencies[5] == 0
    assert ((frequencies - probs.double()).abs() <= 4 * standard_error + 1e-12).all(), frequencies


def test_inverse_cdf_draw_rounding_to_the_total_takes_the_last_token_of_nonzero_probability(monkeypatch):
    """u * total can round up to the total (u < 1): the sampler must not return the masked token past it."""
    import rpt.rollout.hf_engine as hf

    monkeypatch.setattr(hf.torch, "rand", lambda *shape, **kwargs: torch.ones(*shape, dtype=kwargs.get("dtype")))
    logp = torch.tensor([[0.0, 0.0, float("-inf")]]).log_softmax(dim=-1)  # (1, 3): 1/2, 1/2, 0
    assert hf.sample_inverse_cdf(logp, torch.Generator()).tolist() == [1]


def test_hf_engine_samples_do_not_depend_on_batching_and_logprobs_match_a_forward(hf_engine, stories_tokenizer):
    """A prompt's samples depend on its seed alone (alone or batched with others), and each sampled token's
    log-prob is the one a plain forward over prompt + response gives at temperature 0.8."""
    engine = hf_engine()
    prompts = [[1, 200, 300, 41], [1, 17, 90], [1, 5, 6, 7, 8, 9]]
    params = SamplingParams(n=3, temperature=0.8, top_p=1.0, max_tokens=12)
    together = engine.generate(prompts, params, seeds=[11, 12, 13])
    alone = [engine.generate([prompt], params, seeds=[seed])[0] for prompt, seed in zip(prompts, [11, 12, 13])]
    assert [[c.token_ids for c in group] for group in together] == [[c.token_ids for c in group] for group in alone]
    assert len({tuple(c.token_ids) for c in together[0]}) > 1  # the n samples differ
    for prompt, group in zip(prompts, together):
        for completion in group:
            ids = torch.tensor([prompt + completion.token_ids])
            logits = engine.model(ids, use_cache=False).logits[0, len(prompt) - 1:-1]  # (T_new, V)
            expected = (logits / 0.8).log_softmax(-1).gather(-1, torch.tensor(completion.token_ids)[:, None])
            torch.testing.assert_close(torch.tensor(completion.logprobs), expected.squeeze(-1), rtol=0, atol=1e-4)


def test_hf_engine_temperature_zero_is_greedy(hf_engine):
    """Temperature 0 (vLLM's greedy) takes the argmax at every step, whatever the seed, with the untempered
    log-probs of the chosen tokens."""
    engine = hf_engine()
    prompt = [1, 200, 300, 41]
    greedy = SamplingParams(n=2, temperature=0.0, max_tokens=6)
    first, second = engine.generate([prompt], greedy, seeds=[1])[0], engine.generate([prompt], greedy, seeds=[2])[0]
    assert first[0].token_ids == first[1].token_ids == second[0].token_ids
    ids = list(prompt)
    for token, logprob in zip(first[0].token_ids, first[0].logprobs):
        logp = engine.model(torch.tensor([ids]), use_cache=False).logits[0, -1].log_softmax(-1)  # (V,)
        assert token == int(logp.argmax()) and abs(logprob - float(logp[token])) < 1e-4
        ids.append(token)


# --- VLLMEngine against vLLM 0.32.0's semantics ------------------------------------------------------------

class ScheduleHang(RuntimeError):
    """Stands for the real outcome: LLM.generate steps a paused scheduler forever."""


class WeightsNotResident(RuntimeError):
    """Stands for the real outcome: reload_weights writes into unmapped CUDA memory."""


class FakeGPULLM:
    """vllm.LLM on a GPU with enable_sleep_mode=True, as vLLM 0.32.0 behaves in-process:

    - sleep(level) -> EngineCore.sleep (v1/engine/core.py): pause_scheduler (new requests queue, none run),
      then Executor.sleep (v1/executor/abstract.py): sleeping_tags |= SLEEP_TAGS = {"weights", "kv_cache"};
      a second sleep while "weights" sleeps only logs "already sleeping".
    - wake_up(tags) -> Executor.wake_up removes `tags` (None: all) from sleeping_tags (a tag that is not
      asleep: a warning, nothing woken); EngineCore.wake_up resumes the scheduler only when no tag is left
      asleep ("Resume scheduling only once all executor memory is resident again") and returns that.
    - generate while the scheduler is paused: the requests are queued and LLM._run_engine never finishes.
    - collective_rpc("reload_weights") writes into the weight tensors: they must be resident."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.sleeping_tags: set[str] = set()
        self.paused = False
        self.calls: list[tuple] = []

    def sleep(self, level: int = 1) -> None:
        self.calls.append(("sleep", level))
        self.paused = True
        if "weights" not in self.sleeping_tags:
            self.sleeping_tags |= {"weights", "kv_cache"}

    def wake_up(self, tags: list[str] | None = None) -> bool:
        self.calls.append(("wake_up", tags))
        if self.sleeping_tags and (tags is None or set(tags) <= self.sleeping_tags):
            self.sleeping_tags -= set(tags) if tags else self.sleeping_tags
        fully_awake = not self.sleeping_tags
        if fully_awake:
            self.paused = False
        return fully_awake

    def generate(self, prompts, params, use_tqdm=False):
        self.calls.append(("generate", len(prompts)))
        if self.paused:
            raise ScheduleHang(f"scheduler paused with {sorted(self.sleeping_tags)} asleep")
        logprobs = [{7: SimpleNamespace(logprob=-1.0)}, {8: SimpleNamespace(logprob=-2.0)}]
        return [SimpleNamespace(outputs=[SimpleNamespace(index=j, token_ids=[7, 8], finish_reason="length",
                                                         logprobs=logprobs) for j in range(p.n)])
                for p in params]

    def collective_rpc(self, method, kwargs=None):
        if method == "reload_weights":
            self.calls.append(("reload_weights", len(list(kwargs["weights_iterator"]))))
            if "weights" in self.sleeping_tags:
                raise WeightsNotResident("reload_weights into released weights")

    def reset_prefix_cache(self) -> bool:
        self.calls.append(("reset_prefix_cache",))
        return True


needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")


@pytest.fixture
def gpu_vllm_engine(monkeypatch, tmp_path):
    """A real VLLMEngine constructed as on a GPU with sleep_level=1, its vllm.LLM replaced by the fake."""
    from rpt.rollout import vllm_engine

    gpu = SimpleNamespace(is_cpu=lambda: False, is_sleep_mode_available=lambda: True)
    monkeypatch.setattr(vllm_engine, "current_platform", gpu)
    monkeypatch.setattr(vllm_engine.vllm, "LLM", FakeGPULLM)
    return vllm_engine.VLLMEngine(str(tmp_path), eos_token_id=0, sleep_level=1)


WEIGHTS = [("w", torch.zeros(2))]


@needs_vllm
def test_vllm_engine_step_order_matches_vllm_sleep_semantics(gpu_vllm_engine):
    engine = gpu_vllm_engine
    fake = engine.llm
    assert fake.kwargs["enable_sleep_mode"] is True
    assert "enable_chunked_prefill" not in fake.kwargs  # GPUs keep vLLM's chunked prefill
    engine.wake()  # step start on a fresh engine: nothing to do
    assert len(engine.generate([[1, 2]], PARAMS)[0]) == 2
    engine.sleep()
    engine.update_weights(iter(WEIGHTS))
    engine.wake()
    engine.generate([[1, 2]], PARAMS)
    assert fake.calls == [("generate", 1), ("sleep", 1), ("wake_up", ["weights"]), ("reload_weights", 1),
                          ("reset_prefix_cache",), ("wake_up", ["kv_cache"]), ("generate", 1)]
    assert not fake.paused and not fake.sleeping_tags


@needs_vllm
def test_vllm_engine_refuses_the_old_loop_order_before_vllm_would_hang(gpu_vllm_engine):
    engine = gpu_vllm_engine
    engine.sleep()
    engine.update_weights(iter(WEIGHTS))  # weights-only awake, as the old loop left it before evaluation
    with pytest.raises(EngineStateError, match=r"VLLMEngine\.generate\(\) while the engine is weights-only"):
        engine.generate([[1, 2]], PARAMS)
    with pytest.raises(ScheduleHang):  # what the same call does to vLLM itself: the KV cache is still asleep
        engine.llm.generate([[1, 2]], [SimpleNamespace(n=1)])
    with pytest.raises(EngineStateError):
        engine.sleep()
    engine.wake()
    assert engine.llm.wake_up(None) is True and not engine.llm.paused


@needs_vllm
def test_vllm_engine_on_cpu_enforces_the_lifecycle_without_calling_sleep_mode(monkeypatch, tmp_path):
    from rpt.rollout import vllm_engine

    cpu = SimpleNamespace(is_cpu=lambda: True, is_sleep_mode_available=lambda: False)
    monkeypatch.setattr(vllm_engine, "current_platform", cpu)
    monkeypatch.setattr(vllm_engine.vllm, "LLM", FakeGPULLM)
    engine = vllm_engine.VLLMEngine(str(tmp_path), eos_token_id=0, kv_cache_memory_bytes=1 << 20)
    assert engine.llm.kwargs["enable_chunked_prefill"] is False  # seeded sampling never meets a chunked prefill
    engine.sleep()
    with pytest.raises(EngineStateError, match="asleep"):
        engine.generate([[1, 2]], PARAMS)
    engine.update_weights(iter(WEIGHTS))
    engine.wake()
    engine.generate([[1, 2]], PARAMS)
    assert [call[0] for call in engine.llm.calls] == ["reload_weights", "reset_prefix_cache", "generate"]
