"""Tiny models built locally (random init, tokenizers made here), saved with save_pretrained.

No network: these stand in for bert-base-uncased, roberta-base and gpt2 in tests. The shapes are
small so a forward pass takes milliseconds; the tokenizers are real WordPiece and byte-level BPE.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

WORDS = (
    "the a an of to and in is was are be it that this with for on as at by from "
    "capital city country france paris germany berlin italy rome spain madrid japan tokyo "
    "once upon time there lived king queen castle happy sad good bad great terrible movie film "
    "story love hate day night dog cat house red blue green i you he she we they my your"
).split()

CORPUS = [
    "Once upon a time there lived a king in a castle.",
    "The capital of France is Paris.",
    "The capital of Germany is Berlin.",
    "The capital of Italy is Rome.",
    "It was a great movie and I love the story.",
    "The dog and the cat are in the house.",
    " ".join(WORDS),
]


def bert_from_vocab(
    folder: Path, vocab: list[str], head: str = "BertForMaskedLM", seed: int = 0, positions: int = 64
) -> Path:
    """A tiny BERT (2 layers of 32) with a WordPiece ``vocab`` (written as given) and a head, random from ``seed``."""
    import torch
    import transformers
    from transformers import BertConfig, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer.from_pretrained(str(folder))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=positions,
    )
    getattr(transformers, head)(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def build_bert(folder: Path, seed: int = 0) -> Path:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    vocab += [w for w in WORDS if w not in vocab]
    vocab += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"] + ["##s", "##ing", "##ed"]
    return bert_from_vocab(folder, list(dict.fromkeys(vocab)), seed=seed)


def _byte_bpe(specials: list[str], vocab_size: int = 400):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(CORPUS * 5, trainer)
    return bpe


def _roberta_style_tokenizer(cls: Any) -> Any:
    """A byte-level BPE tokenizer with RoBERTa's special tokens and post-processor (RoBERTa and BART share it)."""
    from tokenizers import processors

    bpe = _byte_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)
    return cls(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )


def build_roberta(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _roberta_style_tokenizer(RobertaTokenizerFast)
    torch.manual_seed(seed)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=66,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    RobertaForMaskedLM(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_gpt2(folder: Path, seed: int = 0, chat_template: bool = False) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    bpe = _byte_bpe(["<|endoftext|>"])
    tokenizer = GPT2TokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=128,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


SENTIMENT = {
    "positive": ("good", "great", "love", "happy"),
    "negative": ("bad", "terrible", "hate", "sad"),
    "neutral": ("red", "blue", "green", "house"),
}
SENTIMENT_TEMPLATES = ("it was a {} movie", "i {} this film", "the story is {}", "{} day", "a {} king")


def sentiment_examples(labels: tuple[str, ...] = ("negative", "positive")) -> list[tuple[str, str]]:
    """(text, label) pairs from templates: the label is given away by one word."""
    return [(t.format(w), label) for label in labels for w in SENTIMENT[label] for t in SENTIMENT_TEMPLATES]


def build_bert_classifier(
    folder: Path, labels: tuple[str, ...] = ("negative", "positive"), seed: int = 0, steps: int = 100
) -> Path:
    """A tiny BertForSequenceClassification with named labels (id2label), as `finetune` saves one.

    It is trained for a few steps on :func:`sentiment_examples` (a second or two), so that its
    predictions differ between inputs and mostly agree with the templates' labels; a random head
    gives nearly the same probabilities for every input."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    build_bert(folder, seed)
    config = BertConfig.from_pretrained(str(folder))
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    config.architectures = None
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    tokenizer = BertTokenizer.from_pretrained(str(folder))
    data = sentiment_examples(labels)
    batch = tokenizer([t for t, _ in data], padding=True, return_tensors="pt")
    target = torch.tensor([config.label2id[y] for _, y in data])
    _train(model, {**batch, "labels": target}, steps)
    (folder / "model.safetensors").unlink()
    model.save_pretrained(str(folder))
    return folder


def _train(model, inputs, steps: int, loss=lambda out: out.loss, lr: float = 3e-3) -> None:  # type: ignore[no-untyped-def]
    """A few full-batch AdamW steps: enough to make a tiny random model's outputs differ by input."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains ~30x slower when threads contend for cores
    try:
        model.train()
        for _ in range(steps):
            loss(model(**inputs)).backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
    finally:
        torch.set_num_threads(threads)


def build_bert_pretraining(folder: Path, seed: int = 0, steps: int = 100) -> Path:
    """A tiny BertForPreTraining (masked-LM and next-sentence heads), as `pretrain --nsp` saves one.

    Its NSP head is trained for a few steps on a toy rule (B "follows" A when both carry the same
    sentiment), so that its probabilities differ between pairs."""
    import torch
    from transformers import BertConfig, BertForPreTraining, BertTokenizer

    build_bert(folder, seed)
    config = BertConfig.from_pretrained(str(folder))
    config.architectures = None
    torch.manual_seed(seed)
    model = BertForPreTraining(config)
    tokenizer = BertTokenizer.from_pretrained(str(folder))
    pairs = nsp_examples()
    batch = tokenizer([a for a, _, _ in pairs], [b for _, b, _ in pairs], padding=True, return_tensors="pt")
    nsp = torch.tensor([0 if follows else 1 for _, _, follows in pairs])  # label 0: B follows A

    def nsp_loss(out):  # type: ignore[no-untyped-def]
        return torch.nn.functional.cross_entropy(out.seq_relationship_logits, nsp)

    _train(model, dict(batch), steps, nsp_loss)
    (folder / "model.safetensors").unlink()
    model.save_pretrained(str(folder))
    return folder


def nsp_examples() -> list[tuple[str, str, bool]]:
    """(A, B, B follows A) pairs for the toy rule of :func:`build_bert_pretraining`."""
    texts = sentiment_examples()
    return [(a, b, la == lb) for i, (a, la) in enumerate(texts) for (b, lb) in texts[i % 7 :: 9]]


def build_with_head(
    folder: Path, base: Callable[[Path], Path], head: str, labels: tuple[str, ...] | None = None, seed: int = 0
) -> Path:
    """A tiny model built by ``base`` (e.g. :func:`build_bert`), saved again as Transformers class ``head``
    (``GPT2ForSequenceClassification``, ``BertForTokenClassification``, ``BertModel``, ...) with that head
    newly initialised, untrained: for tests of what each command does with a model of each kind."""
    import torch
    import transformers

    base(folder)
    config = transformers.AutoConfig.from_pretrained(str(folder))
    if labels is not None:
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
    if getattr(config, "pad_token_id", None) is None:  # decoder classifiers find the last token by the pad id
        config.pad_token_id = config.eos_token_id
    config.architectures = None
    torch.manual_seed(seed)
    model = getattr(transformers, head)(config)
    (folder / "model.safetensors").unlink()
    model.save_pretrained(str(folder))
    return folder


NER_LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")
ZH_CHARS = "我爱北京天安门中国的首都是很大你去过吗张三李四住在上海。\uff0c\uff01\uff1f"  # and full-width comma, !, ?


def build_token_classifier(
    folder: Path, base: Callable[[Path], Path], labels: tuple[str, ...] = NER_LABELS, seed: int = 0, scale: float = 30.0
) -> Path:
    """A tiny token classifier (``BertForTokenClassification`` or ``RobertaForTokenClassification``, by
    ``base``), untrained, its head's weights multiplied by ``scale`` so that its labels are confident and
    varied (B-, I- and O tokens side by side): for tests of entity grouping and of the engines."""
    import torch
    import transformers

    base(folder)
    family = transformers.AutoConfig.from_pretrained(str(folder)).model_type
    head = {"bert": "BertForTokenClassification", "roberta": "RobertaForTokenClassification"}[family]
    build_with_head(folder, lambda f: f, head, labels=labels, seed=seed)
    model = getattr(transformers, head).from_pretrained(str(folder))
    with torch.no_grad():
        model.classifier.weight.mul_(scale)
    model.save_pretrained(str(folder))
    return folder


def build_zh_bert(folder: Path, seed: int = 0) -> Path:
    """A tiny BERT with a character vocabulary (as bert-base-chinese has) and some English words."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *ZH_CHARS, *WORDS[:20], "##s", "##ing"]
    return bert_from_vocab(folder, list(dict.fromkeys(vocab)), seed=seed)


def build_sentence_transformer(folder: Path, seed: int = 0) -> Path:
    """A tiny sentence-transformers model folder laid out as all-MiniLM-L6-v2's: a ``BertModel`` (no head)
    from :func:`build_bert`, with ``modules.json`` (Transformer, Pooling, Normalize), ``1_Pooling/config.json``
    (mean pooling, in the older booleans) and ``sentence_bert_config.json``."""
    import json

    import transformers

    build_with_head(folder, build_bert, "BertModel", seed=seed)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    config = transformers.AutoConfig.from_pretrained(str(folder))
    pooling = {
        "word_embedding_dimension": config.hidden_size,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n", encoding="utf-8")
    (folder / "2_Normalize").mkdir(exist_ok=True)
    limits = {"max_seq_length": config.max_position_embeddings, "do_lower_case": False}
    (folder / "sentence_bert_config.json").write_text(json.dumps(limits, indent=2) + "\n", encoding="utf-8")
    return folder


def build_bart(folder: Path, seed: int = 0) -> Path:
    """A tiny BartForConditionalGeneration (an encoder-decoder) with a byte-level BPE tokenizer."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration, BartTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _roberta_style_tokenizer(BartTokenizerFast)
    torch.manual_seed(seed)
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )
    BartForConditionalGeneration(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


# --------------------------------------------------------------------------- encoder-decoders (issue 24)

# Source sentences for the seq2seq tokenizers: the corpus above, a few French lines and Chinese, so that
# translation tests have every character they type in the vocabulary.
SEQ2SEQ_CORPUS = [
    *CORPUS,
    "La capitale de la France est Paris.",
    "Il était une fois un roi dans un château.",
    "Le chien et le chat sont dans la maison.",
    "summarize: translate English to German: translate English to French:",
    "今天天气很好。我们去公园散步吧。北京是中国的首都。",
]

# (English, French) pairs for translation examples and tests.
TRANSLATIONS = [
    ("The capital of France is Paris.", "La capitale de la France est Paris."),
    ("Once upon a time there lived a king in a castle.", "Il était une fois un roi dans un château."),
    ("The dog and the cat are in the house.", "Le chien et le chat sont dans la maison."),
    ("It was a great movie.", "C'était un grand film."),
    ("Good morning.", "Bonjour."),
]


def _seq2seq_lines() -> list[str]:
    """A few hundred lines for a sentencepiece model: the corpus, and word pairs from WORDS."""
    lines = list(SEQ2SEQ_CORPUS)
    for i, word in enumerate(WORDS):
        lines.append(f"{word} {WORDS[(i * 7 + 3) % len(WORDS)]} {WORDS[(i * 11 + 5) % len(WORDS)]}.")
        lines.append(f"The {word} is {WORDS[(i * 5 + 1) % len(WORDS)]}!")
    return lines


def train_sentencepiece(
    prefix: Path, lines: list[str], vocab_size: int = 300, user_symbols: list[str] | None = None
) -> Path:
    """A unigram sentencepiece model trained here on ``lines`` (``prefix``.model); ids: <pad> 0, </s> 1, <unk> 2."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        user_defined_symbols=user_symbols or [],
        minloglevel=2,
        num_threads=1,
    )
    path = prefix.with_suffix(".model")
    path.write_bytes(model.getvalue())
    return path


def build_t5(folder: Path, seed: int = 0, tie_word_embeddings: bool = True) -> Path:
    """A tiny T5ForConditionalGeneration with a Unigram tokenizer made from a sentencepiece model trained
    here, ``task_specific_params`` (summarize/translation prefixes) as t5-small's config has, and a
    generation_config.json (decoder start: the pad token). ``tie_word_embeddings=False`` makes a T5 v1.1
    / Flan-T5 style model: an untied head and no output scaling."""
    import json
    import tempfile

    import sentencepiece as spm
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        processor = spm.SentencePieceProcessor(model_file=str(train_sentencepiece(Path(tmp) / "t5", _seq2seq_lines())))
        vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    vocab[:3] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=4)
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        feed_forward_proj="relu" if tie_word_embeddings else "gated-gelu",
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        task_specific_params={
            "summarization": {"prefix": "summarize: ", "num_beams": 4, "length_penalty": 2.0},
            "translation_en_to_de": {"prefix": "translate English to German: "},
            "translation_en_to_fr": {"prefix": "translate English to French: "},
        },
    )
    model = T5ForConditionalGeneration(config)
    if not tie_word_embeddings:  # a head of its own, not the embeddings
        with torch.no_grad():
            model.lm_head.weight.normal_(0.0, 1.0)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    generation = {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")
    return folder


def build_marian(
    folder: Path, seed: int = 0, *, lines: list[str] | None = None, vocab_size: int = 300, size: str = "tiny"
) -> Path:
    """A MarianMTModel laid out as an OPUS-MT checkpoint: source.spm and target.spm (one sentencepiece model
    trained here on ``lines``, default a few hundred built-in lines), vocab.json with ``<pad>`` last (the
    decoder start), and OPUS-MT's generation_config.json (bad_words_ids: the pad; beams 4). ``size="opus"``:
    6+6 layers, d_model 512, 8 heads, ffn 2048 (OPUS-MT's shape); else tiny."""
    import json
    import tempfile
    import warnings

    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = train_sentencepiece(Path(tmp) / "spm", lines or _seq2seq_lines(), vocab_size)
        (folder / "source.spm").write_bytes(model_path.read_bytes())
        (folder / "target.spm").write_bytes(model_path.read_bytes())
    processor = spm.SentencePieceProcessor(model_file=str(folder / "source.spm"))
    pieces = ["</s>", "<unk>"] + [processor.id_to_piece(i) for i in range(3, processor.get_piece_size())]
    pieces.append("<pad>")
    vocab = {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    with warnings.catch_warnings():  # "Recommended: pip install sacremoses" (punctuation normalising)
        warnings.simplefilter("ignore")
        tokenizer = MarianTokenizer(
            source_spm=str(folder / "source.spm"),
            target_spm=str(folder / "target.spm"),
            vocab=str(folder / "vocab.json"),
            source_lang="en",
            target_lang="fr",
        )
    pad = vocab["<pad>"]
    opus = size == "opus"
    torch.manual_seed(seed)
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=512 if opus else 32,
        encoder_layers=6 if opus else 2,
        decoder_layers=6 if opus else 2,
        encoder_attention_heads=8 if opus else 2,
        decoder_attention_heads=8 if opus else 2,
        encoder_ffn_dim=2048 if opus else 64,
        decoder_ffn_dim=2048 if opus else 64,
        max_position_embeddings=512 if opus else 64,
        activation_function="swish",
        scale_embedding=True,
        pad_token_id=pad,
        eos_token_id=0,
        bos_token_id=0,
        decoder_start_token_id=pad,
        forced_eos_token_id=0,
    )
    MarianMTModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    generation = {
        "bad_words_ids": [[pad]],
        "bos_token_id": 0,
        "decoder_start_token_id": pad,
        "eos_token_id": 0,
        "forced_eos_token_id": 0,
        "max_length": 512,
        "num_beams": 4,
        "pad_token_id": pad,
    }
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")
    return folder
