"""token_logprobs against the naive log_softmax(logits / T).gather, values and gradients."""
import pytest
import torch

from rpt.grpo import token_logprobs
from rpt.policy import PolicyLogprobs
from rpt.model import load_model


def naive_logprobs(hidden, weight, targets, temperature):
    logits = (hidden @ weight.T).to(torch.promote_types(hidden.dtype, torch.float32)) / temperature  # (N, T, V)
    logp_all = torch.log_softmax(logits, dim=-1)
    entropy = -(logp_all.exp() * logp_all).sum(dim=-1)
    return logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1), entropy


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_matches_naive_values_and_gradients(chunk_size):
    torch.manual_seed(0)
    hidden = torch.randn(3, 11, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(40, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 40, (3, 11))
    upstream_logp, upstream_entropy = torch.randn(3, 11), torch.randn(3, 11)  # arbitrary loss weights

    results = []
    for compute in (lambda: token_logprobs(hidden, weight, targets, 0.8, chunk_size, return_entropy=True),
                    lambda: naive_logprobs(hidden, weight, targets, 0.8)):
        hidden.grad = weight.grad = None
        logp, entropy = compute()
        ((logp * upstream_logp).sum() + (entropy * upstream_entropy).sum()).backward()
        results.append((logp.detach(), entropy.detach(), hidden.grad.clone(), weight.grad.clone()))
    for chunked, naive in zip(*results):
        torch.testing.assert_close(chunked, naive, atol=1e-12, rtol=1e-12)


def test_no_logits_kept_for_backward():
    """Under autograd only the inputs and one number per token are saved, never a (chunk, V) logits block."""
    torch.manual_seed(0)
    hidden = torch.randn(2, 16, 8, requires_grad=True)
    weight = torch.randn(50, 8, requires_grad=True)
    targets = torch.randint(0, 50, (2, 16))
    inputs = {hidden.data_ptr(), weight.data_ptr(), targets.data_ptr()}

    def largest_saved(compute):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x) or x, lambda x: x):
            compute()
        return max(x.numel() for x in saved if x.data_ptr() not in inputs)

    assert largest_saved(lambda: token_logprobs(hidden, weight, targets, 0.8, 4, True)) <= 2 * 16
    # The check can fail: the naive computation keeps the (N, T, V) logits.
    assert largest_saved(lambda: naive_logprobs(hidden, weight, targets, 0.8)) >= 2 * 16 * 50


@pytest.mark.parametrize("uses", ["logp", "entropy"])
def test_gradient_when_the_loss_uses_only_one_output(uses):
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(30, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 30, (2, 5))
    results = []
    for compute in (lambda: token_logprobs(hidden, weight, targets, 0.8, 3, return_entropy=True),
                    lambda: naive_logprobs(hidden, weight, targets, 0.8)):
        hidden.grad = weight.grad = None
        logp, entropy = compute()
        (logp if uses == "logp" else entropy).sum().backward()
        results.append((hidden.grad.clone(), weight.grad.clone()))
    for chunked, naive in zip(*results):
        torch.testing.assert_close(chunked, naive, atol=1e-12, rtol=1e-12)


def test_gradcheck_float64():
    torch.manual_seed(0)
    hidden = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 7, (2, 3))
    assert torch.autograd.gradcheck(lambda h, w: token_logprobs(h, w, targets, 0.7, 4, True), (hidden, weight))
    frozen_weight = weight.detach()  # a frozen lm_head: only the hidden states get a gradient
    assert torch.autograd.gradcheck(lambda h: token_logprobs(h, frozen_weight, targets, 0.7, 4), (hidden,))


def tiny_policy_batch(model_dir):
    """The tiny Qwen2, its PolicyLogprobs wrapper and a fixed (2, 12) batch: ids, targets, positions."""
    torch.manual_seed(0)
    model = load_model(model_dir)
    input_ids = torch.randint(0, model.config.vocab_size, (2, 12))
    targets = torch.randint(0, model.config.vocab_size, (2, 12))
    return model, PolicyLogprobs(model), input_ids, targets, torch.arange(12).expand(2, 12)


def test_tiny_model_matches_logits_path(tiny_qwen2_dir):
    model, policy, input_ids, targets, position_ids = tiny_policy_batch(tiny_qwen2_dir)

    logp, entropy = policy(input_ids, position_ids, targets, temperature=0.8, chunk_size=5, return_entropy=True)
    (logp.sum() + 0.5 * entropy.sum()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()

    logits = model(input_ids, use_cache=False).logits  # (N, T, V), the plain HF path
    logp_all = torch.log_softmax(logits.float() / 0.8, dim=-1)
    naive_logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    naive_entropy = -(logp_all.exp() * logp_all).sum(-1)
    (naive_logp.sum() + 0.5 * naive_entropy.sum()).backward()

    torch.testing.assert_close(logp, naive_logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy, naive_entropy, atol=1e-5, rtol=2e-6)  # entropy ~ log V ~ 12
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_loss_mask_runs_the_lm_head_on_masked_positions_only(tiny_qwen2_dir):
    """With loss_mask the masked positions' values and every gradient equal the unmasked path's (loss taken
    over the same positions); the other positions are 0."""
    model, policy, input_ids, targets, position_ids = tiny_policy_batch(tiny_qwen2_dir)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, 7:] = True
    mask[1, 3:5] = True
    weights = torch.randn(2, 12)

    def loss_and_grads(**kwargs):
        model.zero_grad()
        logp, entropy = policy(input_ids, position_ids, targets, temperature=0.8, chunk_size=3,
                               return_entropy=True, **kwargs)
        (torch.where(mask, weights * logp + 0.1 * entropy, 0.0)).sum().backward()
        return logp, entropy, {name: p.grad.clone() for name, p in model.named_parameters()}

    full_logp, full_entropy, full_grads = loss_and_grads()
    logp, entropy, grads = loss_and_grads(loss_mask=mask)
    torch.testing.assert_close(logp[mask], full_logp[mask], atol=1e-6, rtol=0)
    torch.testing.assert_close(entropy[mask], full_entropy[mask], atol=1e-5, rtol=0)
    assert (logp[~mask] == 0).all() and (entropy[~mask] == 0).all()
    for name in grads:
        torch.testing.assert_close(grads[name], full_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value.double() - reference).norm() / reference.norm()).item()


# the CUDA case is marked gpu: deselected by default like tests/gpu (a CPU run shows no skip), run on a GPU
# node with `pytest -m gpu tests/grpo/test_logprobs.py`
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_bf16_lm_head_gradient_accumulates_in_fp32(device):
    """grad_W of a bf16 lm_head sums over chunks in an fp32 buffer. Measured on CPU (M = 2,048 tokens, H = 64,
    V = 2,048), relative error vs fp64: 2.95e-3 at chunk 256 and at 1,024; one bf16 matmul of the exact
    d/dlogits: 2.34e-3; the former bf16 running sum: 4.60e-3 at chunk 256, 3.60e-3 at 1,024. Bounds: within
    1.6x of one bf16 matmul (the bf16 logits of the forward cost ~1.3x; the old sum was 1.96x), and no growth
    with the number of chunks."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("the CUDA path (bf16 GEMM writing fp32) needs a GPU")
    torch.manual_seed(0)
    rows, width, vocab, temperature = 2048, 64, 2048, 0.8
    hidden = torch.randn(1, rows, width).bfloat16().to(device)
    weight = (torch.randn(vocab, width) * 2 / width ** 0.5).bfloat16().to(device)
    targets = torch.randint(0, vocab, (1, rows), device=device)
    upstream = torch.randn(1, rows, device=device)  # advantage-like loss weights
    weight64 = weight.double().requires_grad_()
    (token_logprobs(hidden.double(), weight64, targets, temperature, 1024) * upstream).sum().backward()
    reference = weight64.grad  # (V, H) fp64
    with torch.no_grad():  # the exact d loss / d(h W^T) (M, V), rounded to bf16 once, times hidden: one matmul
        probs = torch.softmax(hidden[0].double() @ weight.double().T / temperature, dim=-1)
        grad_logits = -probs * upstream[0, :, None]
        grad_logits[torch.arange(rows), targets[0]] += upstream[0].double()
        one_matmul = relative_error(grad_logits.div(temperature).bfloat16().T @ hidden[0], reference)
    errors = {}
    for chunk_size in (256, 1024):
        chunked_weight = weight.clone().requires_grad_()
        (token_logprobs(hidden, chunked_weight, targets, temperature, chunk_size) * upstream).sum().backward()
        assert chunked_weight.grad.dtype == torch.bfloat16
        errors[chunk_size] = relative_error(chunked_weight.grad, reference)
    assert errors[256] <= 1.6 * one_matmul, (errors, one_matmul)
    assert abs(errors[256] - errors[1024]) <= 0.02 * errors[1024], errors
