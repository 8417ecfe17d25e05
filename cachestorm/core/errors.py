"""The one exception type that means "the user asked for something we cannot do"."""


class CachestormError(Exception):
    """A user-facing error: its message is one line saying what is wrong and what to do.

    The CLI prints it as ``error: <message>`` and exits non-zero, without a traceback.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
