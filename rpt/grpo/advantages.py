"""Group-normalized advantages (GRPO, Section 3.3 of the paper).

Every sample i of a group of G responses to the same context gets A_i = (r_i - mean(r)) / (std(r) + eps),
and that one number is the advantage of every token of response i (the loss broadcasts it).

Deviations from the paper: none. The std is the unbiased sample std (torch.std's default, as verl and TRL
compute it); the paper does not say which. `scale_by_std=False` is the Dr. GRPO variant (Liu et al. 2025),
offered as an option, not used by the paper.
"""
import torch


def compute_advantages(rewards: torch.Tensor, eps: float = 1e-6, scale_by_std: bool = True) -> torch.Tensor:
    """Group-normalized advantages.

    rewards: (B, G) float, row b holds the G rewards of context b's responses.
    Returns (B, G): (r - mean) / (std + eps) per row, or (r - mean) with scale_by_std=False.
    A group whose G rewards are all equal gets exactly 0 (no signal; dynamic sampling drops these groups),
    even where floating-point rounding of the mean would leave a tiny residue.
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be (B, G) with G >= 2 samples per group, got shape {tuple(rewards.shape)}")
    rewards = rewards.float()
    centered = rewards - rewards.mean(dim=1, keepdim=True)  # (B, G)
    if scale_by_std:
        centered = centered / (rewards.std(dim=1, keepdim=True) + eps)  # (B, G)
    all_equal = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)  # (B, 1)
    return torch.where(all_equal, torch.zeros_like(centered), centered)  # (B, G)
