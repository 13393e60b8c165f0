"""The one exception type that the command line turns into a one-line message."""


class HrtemError(ValueError):
    """A user-facing problem: bad input, bad parameters, a store from another version.

    The message must say what is wrong and what to do; the CLI prints it on one line
    and exits with status 2, without a traceback. A `ValueError`, so library callers
    can catch it as the bad value it reports:

    >>> from hrtem3d.errors import HrtemError
    >>> issubclass(HrtemError, ValueError)
    True
    """
