"""Input formats (HH-RLHF, SHP, TRL, multi-completion) read into the canonical schema."""
