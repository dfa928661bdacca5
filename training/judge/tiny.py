"""A tiny randomly initialised Llama and its tokenizer, built offline in about a second.

For smoke tests and dry runs of the trainer (`training/configs/tiny-test.toml`):

    python -m training.judge.tiny --out runs/tiny-llama

The tokenizer is a byte-level BPE trained on the judge's own prompt vocabulary with Llama-3's
pre-tokenizer (digits split from spaces, so "Answer: 3" ends in a one-token "3", as the judge
expects), ChatML special tokens and chat template. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable

# Llama-3's pre-tokenization pattern: words, 1-3 digit groups, punctuation runs, whitespace.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus(extra: Iterable[str]) -> list[str]:
    from reasoner import prompt

    base = [prompt.SYSTEM_PROMPT, prompt.LISTWISE_QUESTION, prompt.PAIRWISE_QUESTION,
            "Reasoning: Asks: Answer: Verdict: same different none of these similarity Ticket: "
            "Candidates: FAQ: shares lacks fits closest other words need numbers differ negation"]
    # Repeat the answer words so BPE merges each into one token (the judge reads one token).
    base += [f"Answer: {i}\nVerdict: same\nVerdict: different" for i in range(10)] * 50
    return base + list(extra)


def build_tokenizer(texts: Iterable[str] = (), vocab_size: int = 2000):
    """A PreTrainedTokenizerFast with ChatML markers; `texts` add domain words to the vocabulary."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from reasoner.prompt import CHATML_CHAT_TEMPLATE

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(_corpus(texts), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", bos_token=None)
    tokenizer.chat_template = CHATML_CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer, hidden: int = 64, layers: int = 2, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def save_tiny(out: Path, texts: Iterable[str] = (), hidden: int = 64, layers: int = 2) -> Path:
    """Write a tiny Llama + tokenizer folder that `model.base` can point at."""
    import torch

    tokenizer = build_tokenizer(texts)
    model = build_model(tokenizer, hidden, layers).to(torch.bfloat16)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.judge.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, action="append", default=[],
                        help="example JSONL files whose words join the vocabulary")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args(argv)
    texts = [line for path in args.data for line in path.read_text(encoding="utf-8").splitlines()]
    print(save_tiny(args.out, texts, args.hidden, args.layers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
