"""Curation: turn scored trajectory runs into SFT/DPO datasets and check their loss masks."""
