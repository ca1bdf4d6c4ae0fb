"""Training-dynamics observability: a small GPT, its uncertainty monitor, instability events, stabiliser baselines."""
