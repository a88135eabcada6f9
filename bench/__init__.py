"""Side-by-side benchmarks of llmtool against the plain Transformers way (issue 5).

Run ``python -m bench`` (``--help`` for the options); results go to ``bench/results.md`` and
``bench/results.json``. Baselines, the code a user would write instead, are in
``bench/baselines/``.
"""
