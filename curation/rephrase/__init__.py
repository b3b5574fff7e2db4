"""LLM rephrasing: versioned prompt templates, token chunking, backends, output checks, a resumable cache."""
