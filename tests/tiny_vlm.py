"""A tiny LLaVA built from a config, for testing the transformers backend with images offline.

A byte-level BPE tokenizer is trained on a few sentences (plus JSON punctuation and the
special tokens), the vision tower is a 2-layer CLIP, the language model a 2-layer Llama,
all randomly initialised: it writes nonsense, but it is a real vision-language model that
takes the real code paths (processor, chat template, image tokens, generate). Built in a
few seconds, about 1 MB on disk.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_CORPUS = [
    "A cat sits on a red chair next to the window.",
    "How many cups are on the table? There are two cups.",
    '{"items": [{"source_id": "q1", "question": "What is left of the mug?", "answer": "A kettle."}]}',
    '{"verdicts": [{"id": "e1", "improved": true, "score": 7, "reason": "It needs two steps."}]}',
    "The astronaut holds a helmet; the rocket stands on the launch pad.",
    "Which object is closest to the bottom edge of the picture? [0.1, 0.2, 0.5, 0.9]",
]


def build_tiny_llava(folder: Path) -> Path:
    """Write a tiny LLaVA (model, processor, tokenizer, chat template) to `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    specials = ["<pad>", "<s>", "<|end|>", "<image>", "<|system|>", "<|user|>", "<|assistant|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                        eos_token="<|end|>", extra_special_tokens={"image_token": "<image>"})
    tokenizer.chat_template = CHAT_TEMPLATE
    image_size, patch = 28, 14
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=image_size, patch_size=patch, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-1, vision_feature_select_strategy="full")
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    images = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                   crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE,
                               patch_size=patch, vision_feature_select_strategy="full",
                               num_additional_image_tokens=1)  # CLIP adds a CLS feature
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_llava_for_serving(folder: Path, context: int = 16384) -> Path:
    """The tiny LLaVA with room for evol's real prompts, to run behind a real server.

    Its 400-token vocabulary spells evol's operator and judge prompts out in about 4000
    tokens, past the 2048 positions of `build_tiny_llava`, which a server such as
    `transformers serve` enforces (HTTP 400). Rotary positions go on past that, so only
    the config's limit changes.
    """
    from transformers import LlavaConfig

    build_tiny_llava(folder)
    config = LlavaConfig.from_pretrained(folder)
    config.text_config.max_position_embeddings = context
    config.save_pretrained(folder)
    return folder
