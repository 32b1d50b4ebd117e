"""agentkd: distil tool-using LLM agents into small models (collect → curate → train → evaluate)."""

__version__ = "0.1.0"
