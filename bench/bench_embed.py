"""Embedding speed benchmark (issue 3, Speed): the same as `lmrec bench embed`, runnable as a script.

    nice python bench/bench_embed.py --data amazon:../shared/data/amazon-office --json bench/results/embed.json
"""

import sys

from lmrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "embed", *sys.argv[1:]]))
