"""Host CPU as oracle: the native runner, the program generator and the harness (see test_diff_host.py)."""
