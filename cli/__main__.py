"""`python -m cli`: the `prumux-search` command line."""

from cli.main import main

main()
