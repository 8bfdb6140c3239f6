"""The one base class of failures a user can act on. No imports: every module may use it."""


class UserError(Exception):
    """Bad input, a missing prerequisite or an unusable file: the CLI prints the message as one line."""
