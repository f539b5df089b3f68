"""The one exception type for bad input: the CLI turns it into one line on stderr and exit code 2."""


class CvlabError(Exception):
    """Bad input from the user (config, arguments, data). The message names the key or file:line."""


class OutputError(CvlabError):
    """An output could not be written after the work was done: `result` holds what was computed, for the caller
    to show before the one-line error (results are never lost to an unwritable folder)."""

    def __init__(self, message: str, result):
        super().__init__(message)
        self.result = result
