"""Ray job: `distillery baseline` on the cluster (the student on labels only, same budget; into
the store's students/<run_id>-baseline/).

    ray job submit --working-dir . -- \
        python jobs/baseline.py --config jobs/configs/mnist1d.yaml
"""

import sys
from pathlib import Path

# A submitted working dir is a plain clone: put the library on the path; the CLI then ships it
# to the cluster's workers (runtime_env py_modules).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from distillery.cli import main  # noqa: E402

sys.exit(main(["baseline", *sys.argv[1:]]))
