"""The one exception type that the command line turns into a one-line message."""


class HrtemError(Exception):
    """A user-facing problem: bad input, bad parameters, a store from another version.

    The message must say what is wrong and what to do; the CLI prints it on one line
    and exits with status 2, without a traceback.
    """
