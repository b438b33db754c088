"""Sub-commands that modules add to the command line (each module has a `register(subparsers)`)."""
