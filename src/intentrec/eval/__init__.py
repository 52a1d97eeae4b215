"""Full-ranking evaluation: metrics as pure tensor functions."""
