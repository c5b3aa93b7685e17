"""Ray job: `distillery evaluate` on the cluster (report in the store's reports/<run_id>/).

    ray job submit --working-dir . -- \
        python jobs/evaluate.py --config jobs/configs/mnist1d.yaml --models teacher,student
"""

import sys
from pathlib import Path

# A submitted working dir is a plain clone: put the library on the path; the CLI then ships it
# to the cluster's workers (runtime_env py_modules).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from distillery.cli import main  # noqa: E402

sys.exit(main(["evaluate", *sys.argv[1:]]))
