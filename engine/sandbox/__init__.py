"""The local Braze emulator ("sandbox"): a faithful HTTP server for tests and demos.

Stands alone: imports nothing from the rest of `engine`. Entry points: `cli.add_arguments` /
`cli.run` (the `reflow sandbox` command) and `testing.running_sandbox` (in-process, for tests).
"""
