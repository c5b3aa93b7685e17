# The README's two commands: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-lm demo-text demo-tune test test-fast bench bench-strategies bench-monitor clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: the CPU wheel on this kind of machine satisfies it, and a looser
	# resolve could pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[test,text]"
	# DeepSpeed JIT-builds its CPU shared-memory comm op on first use (~30 s): do it at install
	# time, not inside the first training run. A no-op on CUDA machines.
	$(BIN)/python -c "from deepspeed.accelerator import get_accelerator as g; \
	b = g().create_op_builder('ShareMemCommBuilder'); b and b.load(verbose=False)"
	touch $(STAMP)

# Each demo copies its summary.json into bench/results/, where the README's numbers come from.
demo: $(STAMP)
	$(BIN)/distillery quickstart --config jobs/configs/mnist1d.yaml --output-dir quickstart-out
	cp quickstart-out/summary.json bench/results/quickstart-mnist1d.json

# Token-level distillation of a GPT-2-style LM on the stdlib's source (10 minutes or less here).
demo-lm: $(STAMP)
	$(BIN)/distillery quickstart --config jobs/configs/tiny_lm.yaml --output-dir quickstart-lm-out
	cp quickstart-lm-out/summary.json bench/results/quickstart-tiny-lm.json

# Text classification: the pre-trained MiniLM encoder fine-tuned on standard-library docstrings
# and distilled into a BERT of 1/5 its size (under 20 minutes here). The task's files (tables
# and the encoder's directory) are written once, from this machine's own Python.
text-task/docstrings.parquet: | $(STAMP)
	$(BIN)/python -m distillery.data.docstrings text-task

demo-text: $(STAMP) text-task/docstrings.parquet
	$(BIN)/distillery quickstart --config jobs/configs/text.yaml --output-dir quickstart-text-out
	cp quickstart-text-out/summary.json bench/results/text.json

# The README's tuning paragraph (~5 minutes here). A search writes summary.json last, so the
# newest one under runs/tune/ is this search's.
demo-tune: $(STAMP)
	$(BIN)/distillery tune --config jobs/configs/mnist1d.yaml --space tune/mnist1d_response.yaml
	cp "$$(ls -t runs/tune/*/summary.json | head -n 1)" bench/results/tune-mnist1d-response.json

test: $(STAMP)
	$(BIN)/ruff check platform jobs tests bench
	$(BIN)/pytest -q

# The inner loop: the tests with no Ray, no subprocess and no network (conftest.py's rule).
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not integration"

# Not part of `make test`: minutes of training per bench. Each writes bench/results/*.json and
# its section of BENCHMARKS.md. `bench` is the stage benches, each beside the plain alternative
# (~19 min here, and ~9 min for scale.py's 10M-row table, ~4 for its S3 run): serve measures
# the quickstart's models, so the demo's store must hold them;
# ceiling reads the results of teacher_infer and distill_epoch, so it runs after them. The
# strategy table (~25 min; quality reads its last results file, and that of its full-budget
# run, `bench/quality.py --full`, ~11 min) and the monitoring bench (~3 min: how often the
# checks alarm, how fast they catch shifts; no plain alternative) are targets of their own.
bench: $(STAMP) | runs/teachers/cnn-teacher/latest.json
	$(BIN)/pip install --quiet -e ".[test,text,bench]"
	$(BIN)/python bench/teacher_infer.py
	$(BIN)/python bench/distill_epoch.py
	$(BIN)/python bench/ceiling.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/scale.py --s3 --rows 1000000 --files 20

bench-strategies: $(STAMP)
	$(BIN)/pip install --quiet -e ".[test,text,bench]"
	$(BIN)/python bench/strategies.py

bench-monitor: $(STAMP) | runs/teachers/cnn-teacher/latest.json
	$(BIN)/pip install --quiet -e ".[test,text,bench]"
	$(BIN)/python bench/monitor.py

runs/teachers/cnn-teacher/latest.json:
	$(MAKE) demo

clean:
	rm -rf $(VENV) runs quickstart-out quickstart-lm-out
