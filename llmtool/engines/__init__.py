"""The inference engines: torch (Transformers) and CTranslate2, and the one place that chooses between them."""
