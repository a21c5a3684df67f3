"""The `prumux-search` command line: the top layer, the only package that imports all the others.

`cli.main` holds the group and the entry point; `cli.commands` one module per family of commands.
"""
