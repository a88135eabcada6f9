"""The inference engines: their contract (base), torch (Transformers) and CTranslate2 (ct2), and the
one place that chooses between them (choice)."""
