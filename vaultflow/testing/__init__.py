"""Real servers on free ports in temp dirs, for the tests, `make demo` and `make bench`."""
