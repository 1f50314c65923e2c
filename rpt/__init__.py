"""rpt: Reinforcement Pre-Training (next-token reasoning trained with GRPO), in plain PyTorch."""
