"""The one exception type for bad input: the CLI turns it into one line on stderr and exit code 2."""


class CvlabError(Exception):
    """Bad input from the user (config, arguments, data). The message names the key or file:line."""
