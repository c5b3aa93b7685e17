"""Ray job: `distillery compare-strategies` on the cluster: every variant of a variants file
(and the label-only baseline) distilled on the same teacher, student and budget.

    ray job submit --working-dir . -- \
        python jobs/compare_strategies.py --config jobs/configs/mnist1d.yaml \
        --variants bench/strategies.yaml --seeds 3 --output /home/ubuntu/strategies.json

Each run's student lands in the store's students/; the table is printed to the job's log
(`ray job logs`). `--output` is a file on the node the job's driver runs on (the head): the
default, bench/results/strategies.json, is inside the job's unpacked working dir there.
"""

import sys
from pathlib import Path

# A submitted working dir is a plain clone: put the library on the path; the CLI then ships it
# to the cluster's workers (runtime_env py_modules).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from distillery.cli import main  # noqa: E402

sys.exit(main(["compare-strategies", *sys.argv[1:]]))
