"""The one exception type that the command line turns into a one-line message."""


class HrtemError(ValueError):
    """A user-facing problem: bad input, bad parameters, a store from another version.

    The message must say what is wrong and what to do; the CLI prints it on one line
    and exits with status 2, without a traceback. A `ValueError`, so library callers
    can catch it as the bad value it reports:

    >>> from hrtem3d.errors import HrtemError
    >>> issubclass(HrtemError, ValueError)
    True

    `param` names the library parameter at fault (e.g. "contrast", "pixel_size_A"), in the
    library's terms; the CLI shows it as its option (`--contrast`, `--pixel-size`):

    >>> e = HrtemError("contrast must be bright, dark or auto, got 'x'", param="contrast")
    >>> e.param, str(e)
    ('contrast', "contrast must be bright, dark or auto, got 'x'")
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param
