"""The CTranslate2 engine: a conversion cache, and torch-free inference over its entries.

- :mod:`~llmtool.engines.ct2.support`: which architectures and tasks it runs (``supported``);
- :mod:`~llmtool.engines.ct2.cache`: the entries, their keys, manifests and locks; listing, removing;
- :mod:`~llmtool.engines.ct2.convert`: ``ensure_entry``, converting a model folder on first use;
- :mod:`~llmtool.engines.ct2.tokenizer`: the tokenizer exported with an entry, read without transformers;
- :mod:`~llmtool.engines.ct2.encoder`, :mod:`~llmtool.engines.ct2.decoder`: the engines
  (:mod:`llmtool.engines.base`), over :mod:`~llmtool.engines.ct2.runtime`.

At run time (``load_encoder``, ``load_decoder``, ``load_tokenizer``) only ctranslate2, numpy,
tokenizers and safetensors' numpy API are imported; torch and transformers only to convert.
"""
