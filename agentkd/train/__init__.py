"""Training: recipes → TRL SFT / DPO with PEFT LoRA students, merge, provenance (`agentkd train`)."""
