"""Token-level distillation of causal language models (issue 11); see README.md beside this file.

token_losses  top-k KD with a tail bucket, next-token cross-entropy, over (B, L, ...) tensors
topk          the teacher's top-k per token: extraction, cache columns, bytes per token
text_data     documents -> hash splits -> packed block_size + 1 windows; Ray Data reader
bpe           a byte-level BPE tokenizer trained locally
artifacts     models in the store: save_pretrained directory + card.json
cache         teacher inference with Ray Data into the top-k Parquet cache
train         the Ray Train + DeepSpeed loop for causal LMs (next-token, token KD)
evaluation    perplexity, agreement with the teacher, tokens/s; the side-by-side report
pipeline      the stages, as distillery.stages has them for tabular specs
quickstart    every stage end to end, with a summary table
commands      the CLI's commands for a language-model spec

The Hugging Face loaders (local directories only) are distillery.models.hf_loaders, shared with
the text classifiers.
"""
