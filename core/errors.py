"""The one exception type that command-line entry points turn into a one-line message."""

import functools
import sys

MAX_QUOTED_CHARS = 200  # of a library's message quoted in an error line (a loader's can list every tensor)


class UserError(Exception):
    """Bad input from the user: the message says what is wrong and what to do."""


def one_line(text: str) -> str:
    return " ".join(text.split())


def quoted(error: BaseException) -> str:
    """A library's error message, on one line and cut short, to quote inside a UserError."""
    return one_line(str(error))[:MAX_QUOTED_CHARS]


def exit_on_user_error(main):
    """Run `main`; a UserError (or a missing file) becomes one line `error: ...` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (UserError, FileNotFoundError) as error:
            print(f"error: {one_line(str(error))}", file=sys.stderr)
            sys.exit(2)

    return wrapped
