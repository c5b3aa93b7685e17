"""One Serve deployment per causal LM: loaded from the store, it encodes prompts and continues
them token by token.

Loading goes through `lm.artifacts.load_lm` (safetensors, nothing unpickled). Requests are not
batched: each runs its own decode loop in Serve's thread pool, with its own random generator,
so concurrent sampled requests never share random state.
"""

from __future__ import annotations

import torch
from ray import serve
from transformers import DynamicCache, PreTrainedModel

from distillery.lm.artifacts import load_lm
from distillery.storage import Store


@torch.inference_mode()
def generate_ids(model: PreTrainedModel, prompt_ids: list[int], max_new_tokens: int,
                 temperature: float, generator: torch.Generator | None,
                 eos_id: int | None) -> list[int]:
    """Up to `max_new_tokens` ids continuing `prompt_ids`, the last one `eos_id` if the model
    ended the text. Each id is argmax z at temperature 0, else drawn from
    softmax(z / temperature) with `generator`, where z (V,) are the next-token logits. One
    forward pass per id: the KV cache holds the keys and values of the ids before it."""
    cache = DynamicCache(config=model.config)
    x = torch.tensor([prompt_ids])  # (1, T), then (1, 1): only the newest id
    new_ids: list[int] = []
    for _ in range(max_new_tokens):
        z = model(input_ids=x, cache=cache, use_cache=True).logits[0, -1]  # (V,)
        if temperature == 0:
            next_id = int(z.argmax())
        else:
            probs = torch.softmax(z.float() / temperature, dim=-1)
            next_id = int(torch.multinomial(probs, 1, generator=generator))
        new_ids.append(next_id)
        if next_id == eos_id:
            break
        x = torch.tensor([[next_id]])
    return new_ids


@serve.deployment
class LMServer:
    def __init__(self, store_root: str, parts: tuple[str, ...]):
        # a replica owns a fraction of a CPU; more threads would only contend
        torch.set_num_threads(1)
        self.model, self.tokenizer, _ = load_lm(Store(store_root), tuple(parts))

    def encode(self, prompt: str) -> list[int]:
        """The prompt's ids, special tokens included as the model's tokenizer adds them."""
        return self.tokenizer.encode(prompt)

    def generate(self, prompt_ids: list[int], max_new_tokens: int, temperature: float,
                 seed: int | None) -> dict:
        """`{"text", "generated_tokens", "finish_reason"}` of the continuation; the text
        leaves out the EOS, the count includes it. No seed: a fresh one (sampling only)."""
        generator = None
        if temperature > 0:
            generator = torch.Generator()
            if seed is None:
                generator.seed()  # a new Generator starts from one fixed seed: draw afresh
            else:
                generator.manual_seed(seed)
        eos_id = self.tokenizer.eos_token_id
        ids = generate_ids(self.model, prompt_ids, max_new_tokens, temperature, generator,
                           eos_id)
        return {"text": self.tokenizer.decode(ids, skip_special_tokens=True),
                "generated_tokens": len(ids),
                "finish_reason": "eos" if ids[-1] == eos_id else "length"}
