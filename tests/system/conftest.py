"""tests/system holds the chaos soak (``make soak``, ``make soak-ci``), a program rather
than tests: pytest never collects anything here, so ``make test`` does not run it."""

collect_ignore_glob = ["*.py"]
