"""Entry script for ``rollbackd`` under the benchmarks (``python bench/daemon_main.py run --config F``).

A plain file so ``python -m cProfile -o OUT bench/daemon_main.py`` can profile the daemon.
"""

from daemon.cli import main

if __name__ == "__main__":
    main()
