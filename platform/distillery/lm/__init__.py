"""Token-level distillation of causal language models (issue 11); see README.md beside this file.

token_losses  top-k KD with a tail bucket, next-token cross-entropy, over (B, L, ...) tensors
topk          the teacher's top-k per token: extraction, cache columns, bytes per token
text_data     documents -> hash splits -> packed block_size + 1 windows; Ray Data reader
hf_loaders    AutoModelForCausalLM / AutoTokenizer from local directories; vocabulary check
bpe           a byte-level BPE tokenizer trained locally
"""
